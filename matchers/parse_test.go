package matchers

import "testing"

func TestParseUintLikeStrtoul(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true}, {"10", 10, true}, {"0x1F", 31, true}, {"0X1f", 31, true},
		{"010", 8, true}, {"+7", 7, true}, {"4294967295", 4294967295, true},
		{"4294967296", 0, false}, {"-1", 0, false}, {"", 0, false}, {"0b1", 0, false},
		{"0o7", 0, false}, {"1_0", 0, false}, {"08", 0, false}, {"0x", 0, false}, {"12a", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseUint(tt.in, 0xffffffff)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseUint(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
