//go:build race

package main

// raceEnabled: built with -race (everything, the in-process nats-server too, runs slower).
const raceEnabled = true
