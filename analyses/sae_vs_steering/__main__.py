from analyses.sae_vs_steering import main

main()
