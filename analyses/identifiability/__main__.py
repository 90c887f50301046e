from analyses.identifiability import main

main()
