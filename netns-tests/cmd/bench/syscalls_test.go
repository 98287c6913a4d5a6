package main

import "testing"

func TestParsePerfCount(t *testing.T) {
	n, err := parsePerfCount("\n1234567,,raw_syscalls:sys_enter,5001234567,100.00,,\n")
	if err != nil || n != 1234567 {
		t.Fatalf("got %d, %v; want 1234567", n, err)
	}
	for _, bad := range []string{"", "<not counted>,,raw_syscalls:sys_enter,0,100.00,,", "Error: No permissions"} {
		if _, err := parsePerfCount(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
