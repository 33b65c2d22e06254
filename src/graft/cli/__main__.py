from graft.cli.app import main

main()
