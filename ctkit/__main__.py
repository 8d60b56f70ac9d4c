from ctkit.cli import main

main()
