package resolver

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/ambassadord/ambassadord/pkg/source"
)

func TestStatic(t *testing.T) {
	tests := []struct {
		name  string
		specs []Spec
		want  []Route
	}{
		{"none", nil, nil},
		{
			"sorted, addresses rendered, names kept as fallbacks",
			[]Spec{
				{Listen: 6379, Backends: []Endpoint{{Host: "10.0.0.5", Port: 6379}, {Host: "::1", Port: 6380}}, Source: "AMBASSADORD_ROUTES"},
				{Listen: 80, Backends: []Endpoint{{Host: "web", Port: 8080}}, Source: `--route "80:web:8080"`, Target: "web"},
			},
			[]Route{
				{Name: "80", Listen: 80, Backends: []source.Backend{{Addr: "web:8080"}}, Source: `--route "80:web:8080"`, Target: "web", Port: 8080},
				{Name: "6379", Listen: 6379, Backends: []source.Backend{{Addr: "10.0.0.5:6379"}, {Addr: "[::1]:6380"}}, Source: "AMBASSADORD_ROUTES"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tcpRoutes(tt.want), Static(tt.specs))
		})
	}
}
