from analyses.steering_window import main

main()
