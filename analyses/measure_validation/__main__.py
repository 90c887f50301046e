from analyses.measure_validation import main

main()
