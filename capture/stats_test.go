package capture

import (
	"reflect"
	"testing"
)

// TestSourceStatsAddEveryCounter: Add sums every counter, so one added to
// SourceStats later cannot be left out of the summary of several passes.
func TestSourceStatsAddEveryCounter(t *testing.T) {
	var one, sum SourceStats
	v := reflect.ValueOf(&one).Elem()
	for i := range v.NumField() {
		v.Field(i).SetUint(1)
	}
	sum.Add(one)
	sum.Add(one)
	s := reflect.ValueOf(sum)
	for i := range s.NumField() {
		if s.Field(i).Uint() != 2 {
			t.Errorf("%s: %d after adding 1 twice", s.Type().Field(i).Name, s.Field(i).Uint())
		}
	}
}
