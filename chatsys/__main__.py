from chatsys.cli import main

main()
