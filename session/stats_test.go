package session

import (
	"reflect"
	"testing"
)

// TestTrackerStatsAddEveryCounter: Add sums every counter, so a counter
// added to TrackerStats later cannot be left out of the summary of
// several passes.
func TestTrackerStatsAddEveryCounter(t *testing.T) {
	var one, sum TrackerStats
	v := reflect.ValueOf(&one).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Uint64 {
			f.SetUint(1)
		}
	}
	sum.Add(one)
	sum.Add(one)
	s := reflect.ValueOf(sum)
	for i := range s.NumField() {
		if f := s.Field(i); f.Kind() == reflect.Uint64 && f.Uint() != 2 {
			t.Errorf("%s: %d after adding 1 twice", s.Type().Field(i).Name, f.Uint())
		}
	}
}
