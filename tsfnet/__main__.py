from tsfnet.cli import main

main()
