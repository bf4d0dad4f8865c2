from mltune._cli import main

main()
