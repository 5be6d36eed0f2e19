package resolver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// redisLink is what `docker run --link redis:redis` injects for a redis
// container exposing 6379/tcp and 53/udp whose own environment has FOO=bar.
var redisLink = []string{
	"REDIS_PORT=tcp://172.17.0.2:6379",
	"REDIS_PORT_6379_TCP=tcp://172.17.0.2:6379",
	"REDIS_PORT_6379_TCP_ADDR=172.17.0.2",
	"REDIS_PORT_6379_TCP_PORT=6379",
	"REDIS_PORT_6379_TCP_PROTO=tcp",
	"REDIS_PORT_53_UDP=udp://172.17.0.2:53",
	"REDIS_PORT_53_UDP_ADDR=172.17.0.2",
	"REDIS_PORT_53_UDP_PORT=53",
	"REDIS_PORT_53_UDP_PROTO=udp",
	"REDIS_NAME=/amb/redis",
	"REDIS_ENV_FOO=bar",
}

func TestParseClassicEnv(t *testing.T) {
	tests := []struct {
		name     string
		environ  []string
		want     []Spec
		warnings []string
	}{
		{"empty", nil, nil, nil},
		{
			"unrelated variables",
			[]string{"PATH=/bin", "HOME=/root", "REDIS_PORT=tcp://1.2.3.4:5", "X_PORT_1_TCP_ADDR=1.2.3.4", "PORT_80_TCP=tcp://a:80", "_PORT_80_TCP=tcp://a:80", "X_PORT__TCP=tcp://a:1", "x_port_1_tcp=tcp://a:1", "X_PORT_1_SCTP=sctp://a:1"},
			nil, nil,
		},
		{"entries without = and empty names", []string{"REDIS_PORT_6379_TCP", "=C:=C:\\", "", "=x"}, nil, nil},
		{
			"docker link",
			redisLink,
			[]Spec{{Protocol: UDP, Listen: 53, Backends: []Endpoint{{Host: "172.17.0.2", Port: 53}}, Source: "env REDIS_PORT_53_UDP", Alias: "REDIS"}, {Listen: 6379, Backends: []Endpoint{{Host: "172.17.0.2", Port: 6379}}, Source: "env REDIS_PORT_6379_TCP", Alias: "REDIS"}},
			nil,
		},
		{
			"several links sorted by listen",
			[]string{
				"WEB_PORT_8080_TCP=tcp://172.17.0.4:80",
				"DB_PORT_5432_TCP=tcp://db.internal:5432",
				"CACHE_1_PORT_11211_TCP=tcp://[fd00::3]:11211",
				"A_PORT_1_TCP=tcp://10.0.0.1:65535",
			},
			[]Spec{
				{Listen: 1, Backends: []Endpoint{{Host: "10.0.0.1", Port: 65535}}, Source: "env A_PORT_1_TCP", Alias: "A"},
				{Listen: 5432, Backends: []Endpoint{{Host: "db.internal", Port: 5432}}, Source: "env DB_PORT_5432_TCP", Alias: "DB"},
				{Listen: 8080, Backends: []Endpoint{{Host: "172.17.0.4", Port: 80}}, Source: "env WEB_PORT_8080_TCP", Alias: "WEB"},
				{Listen: 11211, Backends: []Endpoint{{Host: "fd00::3", Port: 11211}}, Source: "env CACHE_1_PORT_11211_TCP", Alias: "CACHE_1"},
			},
			nil,
		},
		{
			"alias containing _PORT_",
			[]string{"MY_PORT_APP_PORT_80_TCP=tcp://10.0.0.1:80"},
			[]Spec{{Listen: 80, Backends: []Endpoint{{Host: "10.0.0.1", Port: 80}}, Source: "env MY_PORT_APP_PORT_80_TCP", Alias: "MY_PORT_APP"}},
			nil,
		},
		{
			"link-forwarded variable skipped",
			append([]string{"REDIS_ENV_X_PORT_1_TCP=tcp://evil:1"}, redisLink...),
			[]Spec{{Protocol: UDP, Listen: 53, Backends: []Endpoint{{Host: "172.17.0.2", Port: 53}}, Source: "env REDIS_PORT_53_UDP", Alias: "REDIS"}, {Listen: 6379, Backends: []Endpoint{{Host: "172.17.0.2", Port: 6379}}, Source: "env REDIS_PORT_6379_TCP", Alias: "REDIS"}},
			[]string{
				"env REDIS_ENV_X_PORT_1_TCP: ignored: forwarded from the environment of the container linked as REDIS (REDIS_NAME is set)",
			},
		},
		{
			"link-forwarded variable skipped even when malformed",
			[]string{
				"REDIS_NAME=/amb/redis",
				"REDIS_ENV_X_PORT_0_TCP=tcp://evil:1",
				"REDIS_ENV_Y_PORT_1_TCP=http://evil",
				"REDIS_ENV_Z_PORT_99999_UDP=garbage",
			},
			nil,
			[]string{
				"env REDIS_ENV_X_PORT_0_TCP: ignored: forwarded from the environment of the container linked as REDIS (REDIS_NAME is set)",
				"env REDIS_ENV_Y_PORT_1_TCP: ignored: forwarded from the environment of the container linked as REDIS (REDIS_NAME is set)",
				"env REDIS_ENV_Z_PORT_99999_UDP: ignored: forwarded from the environment of the container linked as REDIS (REDIS_NAME is set)",
			},
		},
		{
			"forwarded through an alias that itself contains _ENV_",
			[]string{"MY_ENV_DB_NAME=/amb/db", "MY_ENV_DB_ENV_X_PORT_1_TCP=tcp://evil:1", "MY_ENV_DB_PORT_5432_TCP=tcp://10.0.0.9:5432"},
			[]Spec{{Listen: 5432, Backends: []Endpoint{{Host: "10.0.0.9", Port: 5432}}, Source: "env MY_ENV_DB_PORT_5432_TCP", Alias: "MY_ENV_DB"}},
			[]string{"env MY_ENV_DB_ENV_X_PORT_1_TCP: ignored: forwarded from the environment of the container linked as MY_ENV_DB (MY_ENV_DB_NAME is set)"},
		},
		{
			"forwarded twice, through nested links",
			[]string{"A_NAME=/amb/a", "A_ENV_B_ENV_C_PORT_1_TCP=tcp://evil:1"},
			nil,
			[]string{"env A_ENV_B_ENV_C_PORT_1_TCP: ignored: forwarded from the environment of the container linked as A (A_NAME is set)"},
		},
		{
			"user alias containing _ENV_ honoured without a _NAME variable",
			[]string{"PROD_ENV_DB_PORT_5432_TCP=tcp://10.0.0.7:5432", "PROD_ENV_DB_NAME=/amb/x", "DB_NAME=/amb/db"},
			[]Spec{{Listen: 5432, Backends: []Endpoint{{Host: "10.0.0.7", Port: 5432}}, Source: "env PROD_ENV_DB_PORT_5432_TCP", Alias: "PROD_ENV_DB"}},
			nil,
		},
		{
			"_NAME without a value still marks an alias",
			[]string{"X_NAME=", "X_ENV_A_PORT_1_TCP=tcp://evil:1"},
			nil,
			[]string{"env X_ENV_A_PORT_1_TCP: ignored: forwarded from the environment of the container linked as X (X_NAME is set)"},
		},
		{
			"a _NAME entry without = does not mark an alias",
			[]string{"X_NAME", "X_ENV_A_PORT_1_TCP=tcp://10.0.0.1:1"},
			[]Spec{{Listen: 1, Backends: []Endpoint{{Host: "10.0.0.1", Port: 1}}, Source: "env X_ENV_A_PORT_1_TCP", Alias: "X_ENV_A"}},
			nil,
		},
		{
			"empty prefix is not an alias",
			[]string{"_NAME=x", "_ENV_A_PORT_1_TCP=tcp://10.0.0.1:1"},
			[]Spec{{Listen: 1, Backends: []Endpoint{{Host: "10.0.0.1", Port: 1}}, Source: "env _ENV_A_PORT_1_TCP", Alias: "_ENV_A"}},
			nil,
		},
		{
			"UDP, and a TCP port of the same number",
			[]string{"DNS_PORT_53_UDP=udp://10.0.0.2:53", "NTP_PORT_123_UDP=udp://10.0.0.3:123", "DNS_PORT_53_TCP=tcp://10.0.0.2:53"},
			[]Spec{
				{Listen: 53, Backends: []Endpoint{{Host: "10.0.0.2", Port: 53}}, Source: "env DNS_PORT_53_TCP", Alias: "DNS"},
				{Protocol: UDP, Listen: 53, Backends: []Endpoint{{Host: "10.0.0.2", Port: 53}}, Source: "env DNS_PORT_53_UDP", Alias: "DNS"},
				{Protocol: UDP, Listen: 123, Backends: []Endpoint{{Host: "10.0.0.3", Port: 123}}, Source: "env NTP_PORT_123_UDP", Alias: "NTP"},
			},
			nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings, err := ParseClassicEnv(tt.environ)
			require.NoError(t, err)
			assert.Equal(t, tcpSpecs(tt.want), got)
			assert.Equal(t, tt.warnings, warnings)
		})
	}
}

func TestParseClassicEnvErrors(t *testing.T) {
	tests := []struct {
		name     string
		environ  []string
		wantErr  []string
		warnings []string
	}{
		{"wrong scheme", []string{"REDIS_PORT_6379_TCP=http://x:1"}, []string{`env REDIS_PORT_6379_TCP="http://x:1": scheme must be tcp://`}, nil},
		{"upper-case scheme", []string{"A_PORT_1_TCP=TCP://x:1"}, []string{"scheme must be tcp://"}, nil},
		{"no scheme", []string{"A_PORT_1_TCP=10.0.0.1:1"}, []string{"scheme must be tcp://"}, nil},
		{"udp scheme on tcp", []string{"A_PORT_1_TCP=udp://10.0.0.1:1"}, []string{"scheme must be tcp://"}, nil},
		{"empty value", []string{"A_PORT_1_TCP="}, []string{`env A_PORT_1_TCP="": scheme must be tcp://`}, nil},
		{"missing host", []string{"A_PORT_1_TCP=tcp://:1"}, []string{"missing host"}, nil},
		{"nothing after scheme", []string{"A_PORT_1_TCP=tcp://"}, []string{"empty backend"}, nil},
		{"missing port", []string{"A_PORT_1_TCP=tcp://10.0.0.1"}, []string{`env A_PORT_1_TCP="tcp://10.0.0.1": missing port`}, nil},
		{"empty port", []string{"A_PORT_1_TCP=tcp://10.0.0.1:"}, []string{"missing port after ':'"}, nil},
		{"non-numeric port", []string{"A_PORT_1_TCP=tcp://10.0.0.1:http"}, []string{`port "http": not a decimal number`}, nil},
		{"port out of range", []string{"A_PORT_1_TCP=tcp://10.0.0.1:70000"}, []string{`port "70000": out of range 1..65535`}, nil},
		{"port zero", []string{"A_PORT_1_TCP=tcp://10.0.0.1:0"}, []string{`port "0": out of range`}, nil},
		{"trailing slash", []string{"A_PORT_1_TCP=tcp://10.0.0.1:1/"}, []string{`unexpected "/" after HOST:PORT`}, nil},
		{"path", []string{"A_PORT_1_TCP=tcp://10.0.0.1:1/x"}, []string{`unexpected "/x" after HOST:PORT`}, nil},
		{"query", []string{"A_PORT_1_TCP=tcp://10.0.0.1:1?x=y"}, []string{`unexpected "?x=y" after HOST:PORT`}, nil},
		{"userinfo", []string{"A_PORT_1_TCP=tcp://u@10.0.0.1:1"}, []string{"invalid character '@'"}, nil},
		{"extra text", []string{"A_PORT_1_TCP=tcp://10.0.0.1:1=2"}, []string{`port "1=2": not a decimal number`}, nil},
		{"trailing space", []string{"A_PORT_1_TCP=tcp://10.0.0.1:1 "}, []string{`port "1 ": not a decimal number`}, nil},
		{"several backends", []string{"A_PORT_1_TCP=tcp://a:1,b"}, []string{`port "1,b": not a decimal number`}, nil},
		{"unbracketed IPv6", []string{"A_PORT_1_TCP=tcp://::1:1"}, []string{"too many colons"}, nil},
		{"port in name not a number", []string{"A_PORT_HTTP_TCP=tcp://10.0.0.1:1"}, []string{`env A_PORT_HTTP_TCP: port "HTTP" in name: not a decimal number`}, nil},
		{"port in name zero", []string{"A_PORT_0_TCP=tcp://10.0.0.1:1"}, []string{`env A_PORT_0_TCP: port "0" in name: out of range 1..65535`}, nil},
		{"port in name too big", []string{"A_PORT_65536_TCP=tcp://10.0.0.1:1"}, []string{`env A_PORT_65536_TCP: port "65536" in name: out of range`}, nil},
		{"port in name leading zero", []string{"A_PORT_080_TCP=tcp://10.0.0.1:1"}, []string{`port "080" in name: leading zero`}, nil},
		{"port in name on UDP", []string{"A_PORT_0_UDP=udp://10.0.0.1:1"}, []string{`env A_PORT_0_UDP: port "0" in name: out of range`}, nil},
		{
			"duplicate listen port",
			[]string{"A_PORT_6379_TCP=tcp://10.0.0.1:6379", "B_PORT_6379_TCP=tcp://10.0.0.2:6379"},
			[]string{"listen port 6379 is claimed twice: env A_PORT_6379_TCP and env B_PORT_6379_TCP (keep one of them, or give one another listen port)"},
			nil,
		},
		{
			"all errors reported, warnings kept",
			[]string{"A_PORT_1_TCP=http://x:1", "D_PORT_53_UDP=tcp://x:53", "B_PORT_0_TCP=tcp://x:1", "C_PORT_2_TCP=tcp://x:2", "E_ENV_F_PORT_1_TCP=tcp://x:1", "E_NAME=/a/e"},
			[]string{`env A_PORT_1_TCP="http://x:1": scheme must be tcp://`, `env D_PORT_53_UDP="tcp://x:53": scheme must be udp://`, `env B_PORT_0_TCP: port "0" in name`},
			[]string{"env E_ENV_F_PORT_1_TCP: ignored: forwarded from the environment of the container linked as E (E_NAME is set)"},
		},
		{
			"user alias containing _ENV_ validated",
			[]string{"PROD_ENV_DB_PORT_5432_TCP=tcp://10.0.0.7"},
			[]string{`env PROD_ENV_DB_PORT_5432_TCP="tcp://10.0.0.7": missing port`},
			nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings, err := ParseClassicEnv(tt.environ)
			require.Error(t, err)
			assert.Nil(t, got)
			for _, want := range tt.wantErr {
				assert.Contains(t, err.Error(), want)
			}
			assert.Equal(t, tt.warnings, warnings)
		})
	}
}
