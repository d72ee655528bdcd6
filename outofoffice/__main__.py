from outofoffice.cli import main

main()
