package resolver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParsePortsLabel(t *testing.T) {
	tests := []struct {
		in       string
		want     []portPair
		warnings []string
	}{
		{"", nil, nil},
		{"6379", []portPair{{"tcp", 6379, 6379}}, nil},
		{"6379,8080:80", []portPair{{"tcp", 6379, 6379}, {"tcp", 8080, 80}}, nil},
		{" 6379 , 8080:80 ,", []portPair{{"tcp", 6379, 6379}, {"tcp", 8080, 80}}, nil},
		{",,", nil, nil},
		{"1:65535,65535:1", []portPair{{"tcp", 1, 65535}, {"tcp", 65535, 1}}, nil},
		{
			"6379,abc,8080:0,0,:80,80:,8080:80,070",
			[]portPair{{"tcp", 6379, 6379}, {"tcp", 8080, 80}},
			[]string{
				`label ambassador.ports: entry "abc" skipped: listen port "abc": not a decimal number (want LISTEN or LISTEN:BACKEND)`,
				`label ambassador.ports: entry "8080:0" skipped: backend port "0": out of range 1..65535 (want LISTEN or LISTEN:BACKEND)`,
				`label ambassador.ports: entry "0" skipped: listen port "0": out of range 1..65535 (want LISTEN or LISTEN:BACKEND)`,
				`label ambassador.ports: entry ":80" skipped: listen port "": empty (want LISTEN or LISTEN:BACKEND)`,
				`label ambassador.ports: entry "80:" skipped: backend port "": empty (want LISTEN or LISTEN:BACKEND)`,
				`label ambassador.ports: entry "070" skipped: listen port "070": leading zero (want LISTEN or LISTEN:BACKEND)`,
			},
		},
		{
			"6379:6380,6379",
			[]portPair{{"tcp", 6379, 6380}},
			[]string{`label ambassador.ports: entry "6379" skipped: listen port 6379/tcp already given by "6379:6380"`},
		},
		{
			"1:2:3,6379/sctp,65536",
			nil,
			[]string{
				`label ambassador.ports: entry "1:2:3" skipped: backend port "2:3": not a decimal number (want LISTEN or LISTEN:BACKEND)`,
				`label ambassador.ports: entry "6379/sctp" skipped: protocol "sctp": want tcp or udp`,
				`label ambassador.ports: entry "65536" skipped: listen port "65536": out of range 1..65535 (want LISTEN or LISTEN:BACKEND)`,
			},
		},
		{"53/udp,53,5353:53/udp,6379/tcp", []portPair{{"udp", 53, 53}, {"tcp", 53, 53}, {"udp", 5353, 53}, {"tcp", 6379, 6379}}, nil},
		{
			"53/udp,53:54/udp",
			[]portPair{{"udp", 53, 53}},
			[]string{`label ambassador.ports: entry "53:54/udp" skipped: listen port 53/udp already given by "53/udp"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, warnings := parsePortsLabel(tt.in)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.warnings, warnings)
		})
	}
}

func TestParsePriority(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr string
	}{
		{"0", 0, ""},
		{"10", 10, ""},
		{"-5", -5, ""},
		{"+7", 7, ""},
		{" 3 ", 3, ""},
		{"007", 7, ""},
		{"2147483647", 2147483647, ""},
		{"-2147483647", -2147483647, ""},
		{"2147483648", 0, "out of range"},
		{"-2147483648", 0, "out of range"},
		{"99999999999999999999999", 0, "out of range"},
		{"", 0, "empty"},
		{"  ", 0, "empty"},
		{"high", 0, "not an integer"},
		{"1.5", 0, "not an integer"},
		{"1e3", 0, "not an integer"},
		{"0x10", 0, "not an integer"},
		{"--1", 0, "not an integer"},
		{"+-1", 0, "not an integer"},
		{"-", 0, "not an integer"},
		{"1 2", 0, "not an integer"},
		{"1_000", 0, "not an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parsePriority(tt.in)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseClaimScope(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want ClaimScope
		err  string
	}{
		{in: "", want: ClaimScope{}},
		{in: "network", want: ClaimScope{}},
		{in: "project", want: ClaimScope{Project: true}},
		{in: "label:trusted", want: ClaimScope{Label: "trusted"}},
		{in: "label:team=payments", want: ClaimScope{Label: "team=payments"}},
		{in: "label:", err: "want label:KEY or label:KEY=VALUE"},
		{in: "label:=x", err: "want label:KEY or label:KEY=VALUE"},
		{in: "everyone", err: "want network, project, label:KEY or label:KEY=VALUE"},
	} {
		got, err := ParseClaimScope(tt.in)
		if tt.err != "" {
			assert.ErrorContains(t, err, tt.err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, tt.in)
		if tt.in != "" {
			assert.Equal(t, tt.in, got.String())
		}
	}
}
