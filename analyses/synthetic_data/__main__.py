from analyses.synthetic_data import main

main()
