"""Local emulators of upstream image APIs: real HTTP servers on loopback, one per API family."""
