//go:build race

package s3_test

// raceEnabled: the race detector's shadow memory swells the RSS of the
// processes the tests measure.
const raceEnabled = true
