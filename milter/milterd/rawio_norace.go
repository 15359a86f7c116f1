//go:build linux && !race

package milterd

// rawSocketIO selects rawIO (see rawio_race.go for when it is off).
const rawSocketIO = true
