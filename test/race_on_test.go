//go:build race

package test

// raceOn: under the race detector the test clients run several times slower,
// and their pauses measure the detector, not the relay.
const raceOn = true
