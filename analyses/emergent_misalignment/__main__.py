from analyses.emergent_misalignment import main

main()
