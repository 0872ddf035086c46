from tracer.launch import main

main()
