//go:build race

package matchers

// raceEnabled reports a -race build, where timings mean nothing.
const raceEnabled = true
