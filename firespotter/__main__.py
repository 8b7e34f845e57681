from firespotter.runtime.cli import main

main()
