package watcher

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseEngine(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want EngineSpec
	}{
		{"big=tcp://192.168.1.52:2376,tls=/certs/big",
			EngineSpec{Name: "big", URL: "tcp://192.168.1.52:2376", TLSDir: "/certs/big"}},
		{"  big-2=tcp://docker.example.com:2376,address=192.168.1.52,tls=certs/big  ",
			EngineSpec{Name: "big-2", URL: "tcp://docker.example.com:2376", TLSDir: "certs/big", Address: "192.168.1.52"}},
		{"v6=tcp://[2001:db8::1]:2376,tls=/c,address=2001:DB8::0:1",
			EngineSpec{Name: "v6", URL: "tcp://[2001:db8::1]:2376", TLSDir: "/c", Address: "2001:db8::1"}},
		{"lab=tcp://10.0.0.5:2375,insecure",
			EngineSpec{Name: "lab", URL: "tcp://10.0.0.5:2375", Insecure: true}},
		{"0_x=unix:///run/big.sock",
			EngineSpec{Name: "0_x", URL: "unix:///run/big.sock"}},
		{"tunnel=unix:///run/big.sock,address=192.168.1.52",
			EngineSpec{Name: "tunnel", URL: "unix:///run/big.sock", Address: "192.168.1.52"}},
		{"a=tcp://A-1.Example:65535,tls=/x=y",
			EngineSpec{Name: "a", URL: "tcp://A-1.Example:65535", TLSDir: "/x=y"}},
		{strings.Repeat("a", 32) + "=unix:///s", EngineSpec{Name: strings.Repeat("a", 32), URL: "unix:///s"}},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseEngine(tt.in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			again, err := ParseEngine(got.String())
			require.NoError(t, err, "String gives what ParseEngine reads")
			assert.Equal(t, got, again)
		})
	}
}

func TestParseEngineRefusals(t *testing.T) {
	const (
		plain = "tcp:// without tls= sends the engine's API, which controls every container of its host, in clear text " +
			"and to whoever answers: add tls=DIR (a directory with ca.pem, cert.pem and key.pem, as DOCKER_CERT_PATH), " +
			"or add insecure to accept that on a network you trust"
		ssh = "ssh:// is not supported: Docker's ssh connection helper runs the ssh client, and `docker system dial-stdio` " +
			"on the engine's host, and the ambassadord image (FROM scratch) has no ssh client: " +
			"use tcp://HOST:2376 with tls=DIR (dockerd --tlsverify), or forward the engine's socket over ssh " +
			"(ssh -nNT -L /run/NAME.sock:/var/run/docker.sock USER@HOST) and give unix:///run/NAME.sock"
	)
	long := "/" + strings.Repeat("s", maxSocketPath)
	for _, tt := range []struct {
		in   string
		want string // after `engine "IN": `
	}{
		{"", "empty: want NAME=URL[,tls=DIR][,address=IP][,insecure]"},
		{"big", "missing '=' after the name: want NAME=URL[,tls=DIR][,address=IP][,insecure]"},
		{"=tcp://h:1,insecure", "empty engine name: want NAME=URL[,tls=DIR][,address=IP][,insecure]"},
		{"Big=tcp://h:1,insecure", `engine name "Big" has 'B' at byte 0: want lower-case letters, digits, '_' and '-', starting with a letter or a digit`},
		{"-big=tcp://h:1,insecure", `engine name "-big" has '-' at byte 0: want lower-case letters, digits, '_' and '-', starting with a letter or a digit`},
		{"b.g=tcp://h:1,insecure", `engine name "b.g" has '.' at byte 1: want lower-case letters, digits, '_' and '-', starting with a letter or a digit`},
		{strings.Repeat("a", 33) + "=unix:///s", `engine name "` + strings.Repeat("a", 33) + `" is 33 characters long, more than 32`},
		{"local=unix:///var/run/docker.sock", `engine name "local" is the engine the ambassador runs on (--docker-host gives its address): choose another name`},
		{"big=tcp://10.0.0.5:2375", plain},
		{"big=ssh://me@big", ssh},
		{"big=192.168.1.52:2376", `URL "192.168.1.52:2376" has no scheme: want unix:///PATH or tcp://HOST:PORT`},
		{"big=https://h:2376", `URL "https://h:2376": write tcp:// for an engine on TCP, and tls=DIR for TLS: want unix:///PATH or tcp://HOST:PORT`},
		{"big=npipe:////./pipe/docker_engine", `URL "npipe:////./pipe/docker_engine": unsupported scheme "npipe": want unix:///PATH or tcp://HOST:PORT`},
		{"big=unix://", "unix:// needs the socket's path: unix:///var/run/docker.sock"},
		{"big=unix://run/d.sock", "unix://run/d.sock: the socket's path must be absolute: unix:///run/d.sock"},
		{"big=unix://" + long, "unix://" + long + ": the socket's path is 109 bytes long, more than a socket address holds (108)"},
		{"big=tcp://h,insecure", "tcp://h: missing port: tcp://h:2376 (Docker's port for TLS)"},
		{"big=tcp://[::1],insecure", "tcp://[::1]: missing port: tcp://[::1]:2376 (Docker's port for TLS)"},
		{"big=tcp://::1:2376,insecure", "tcp://::1:2376: want HOST:PORT, an IPv6 address in brackets: tcp://[::1]:2376"},
		{"big=tcp://h:,insecure", `tcp://h:: port "": empty`},
		{"big=tcp://h:02376,insecure", `tcp://h:02376: port "02376": leading zero`},
		{"big=tcp://h:65536,insecure", `tcp://h:65536: port "65536": out of range 1..65535`},
		{"big=tcp://h:+1,insecure", `tcp://h:+1: port "+1": not a decimal number`},
		{"big=tcp://h:2376/v1.41,insecure", `tcp://h:2376/v1.41: "/": a tcp:// URL is only HOST:PORT, with no user, path or query`},
		{"big=tcp://me@h:2376,insecure", `tcp://me@h:2376: "@": a tcp:// URL is only HOST:PORT, with no user, path or query`},
		{"big=tcp://[1.2.3.4]:2376,insecure", `tcp://[1.2.3.4]:2376: "1.2.3.4" in brackets is not an IPv6 address (without a zone)`},
		{"big=tcp://[fe80::1%eth0]:2376,insecure", `tcp://[fe80::1%eth0]:2376: "fe80::1%eth0" in brackets is not an IPv6 address (without a zone)`},
		{"big=tcp://127.1:2376,insecure", `tcp://127.1:2376: "127.1" is neither an IP address nor a host name`},
		{"big=tcp://a_b:2376,insecure", `tcp://a_b:2376: "a_b" is neither an IP address nor a host name`},
		{"big=tcp://-a:2376,insecure", `tcp://-a:2376: "-a" is neither an IP address nor a host name`},
		{"big=tcp://a..b:2376,insecure", `tcp://a..b:2376: "a..b" is neither an IP address nor a host name`},
		{"big=tcp://h:2376,tls=", "tls= needs a directory: tls=DIR, with ca.pem, cert.pem and key.pem in it"},
		{"big=tcp://h:2376,tls=/a,tls=/b", "option tls= is given twice"},
		{"big=tcp://h:2376,insecure,insecure", "option insecure is given twice"},
		{"big=tcp://h:2376,insecure=true", "insecure takes no value: write insecure, not insecure=true"},
		{"big=tcp://h:2376,tls=/c,", "empty option (two commas, or one at the end): want NAME=URL[,tls=DIR][,address=IP][,insecure]"},
		{"big=tcp://h:2376,tlsverify", `unknown option "tlsverify": want tls=DIR, address=IP or insecure`},
		{"big=tcp://h:2376,tls=/c,address=", "address=: empty: want the IP address of the engine's host, where its containers publish their ports"},
		{"big=tcp://h:2376,tls=/c,address=big.example",
			"address=big.example: not an IP address: want the IP address of the engine's host, where its containers publish their ports (a name goes in the URL)"},
		{"big=tcp://h:2376,tls=/c,address=fe80::1%eth0", "address=fe80::1%eth0: an address with a zone cannot be reached from another host: drop the zone"},
		{"big=tcp://h:2376,tls=/c,address=0.0.0.0", "address=0.0.0.0: an unspecified address is no host's: give the address the engine's host is reached at"},
		{"big=unix:///run/d.sock,tls=/c", "tls= applies to tcp:// engines only: a unix:// socket is guarded by its file's permissions; drop tls="},
		{"big=unix:///run/d.sock,insecure", "insecure applies to tcp:// engines only: a unix:// socket never leaves the host; drop insecure"},
		{"big=tcp://h:2376,tls=/c,insecure", "tls= and insecure exclude each other: with tls= the engine is always verified; drop insecure"},
		{"big=tcp://h:2376,tls=/my certs", `' ' at byte 24: whitespace, control and non-ASCII characters, and ';', have no place in an engine`},
		{"big=unix:///a;b", `';' at byte 13: whitespace, control and non-ASCII characters, and ';', have no place in an engine`},
		{"bïg=unix:///s", `'ï' at byte 1: whitespace, control and non-ASCII characters, and ';', have no place in an engine`},
	} {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseEngine(tt.in)
			assert.EqualError(t, err, `engine "`+strings.TrimSpace(tt.in)+`": `+tt.want)
		})
	}
}

func TestParseEngines(t *testing.T) {
	specs, err := ParseEngines(" ; big=tcp://10.0.0.5:2376,tls=/certs/big;;\nsmall=unix:///run/small.sock ;")
	require.NoError(t, err)
	assert.Equal(t, []EngineSpec{
		{Name: "big", URL: "tcp://10.0.0.5:2376", TLSDir: "/certs/big"},
		{Name: "small", URL: "unix:///run/small.sock"},
	}, specs)

	specs, err = ParseEngines(" ;; ")
	require.NoError(t, err)
	assert.Empty(t, specs)

	_, err = ParseEngines("big=tcp://10.0.0.5:2376,tls=/a;small=unix:///s;big=tcp://10.0.0.6:2376,tls=/b")
	assert.EqualError(t, err, `engine "big" is given twice, "big=tcp://10.0.0.5:2376,tls=/a" and "big=tcp://10.0.0.6:2376,tls=/b": `+
		`give each engine a name of its own`)

	// Every bad item is reported, and nothing is returned.
	specs, err = ParseEngines("a=tcp://h:1;b=ssh://h;c=unix:///s")
	assert.Nil(t, specs)
	require.Error(t, err)
	assert.Equal(t, 2, strings.Count(err.Error(), "\n")+1, "%v", err)
	assert.Contains(t, err.Error(), `engine "a=tcp://h:1": tcp:// without tls=`)
	assert.Contains(t, err.Error(), `engine "b=ssh://h": ssh:// is not supported`)
}

func TestUniqueNames(t *testing.T) {
	a := EngineSpec{Name: "a", URL: "unix:///a"}
	b := EngineSpec{Name: "b", URL: "unix:///b"}
	a2 := EngineSpec{Name: "a", URL: "unix:///a2"}
	assert.NoError(t, UniqueNames(nil))
	assert.NoError(t, UniqueNames([]EngineSpec{a, b}))
	assert.EqualError(t, UniqueNames([]EngineSpec{a, b, a2, a}),
		`engine "a" is given twice, "a=unix:///a" and "a=unix:///a2": give each engine a name of its own`+"\n"+
			`engine "a" is given twice, "a=unix:///a" and "a=unix:///a": give each engine a name of its own`)
}

func TestHostAddress(t *testing.T) {
	for _, tt := range []struct {
		in, want string
	}{
		{"big=tcp://192.168.1.52:2376,tls=/c", "192.168.1.52"},
		{"big=tcp://big.example:2376,tls=/c", "big.example"},
		{"big=tcp://[2001:db8::1]:2376,tls=/c", "2001:db8::1"},
		{"big=tcp://big.example:2376,tls=/c,address=10.0.0.5", "10.0.0.5"},
		{"big=unix:///run/big.sock", ""},
		{"big=unix:///run/big.sock,address=10.0.0.5", "10.0.0.5"},
	} {
		spec, err := ParseEngine(tt.in)
		require.NoError(t, err)
		assert.Equal(t, tt.want, spec.HostAddress(), tt.in)
	}
}

// FuzzParseEngine checks what the parser accepts: a valid name, a URL of a
// supported scheme, options that agree with it, and a spec that String
// gives back unchanged. It reads no file: the TLS directory is Validate's.
func FuzzParseEngine(f *testing.F) {
	for _, s := range []string{
		"big=tcp://192.168.1.52:2376,tls=/certs/big", "big=tcp://h.example:2376,tls=c,address=10.0.0.5",
		"v6=tcp://[::1]:2376,tls=/c,address=::ffff:1.2.3.4", "lab=tcp://10.0.0.5:2375,insecure", "s=unix:///run/s.sock",
		"local=unix:///x", "big=ssh://me@h", "big=tcp://h:0", "big=tcp://[fe80::1%25eth0]:1,insecure", "a=tcp://h:1,,tls=/c",
		"a=tcp://h:1,tls=/c,address=0.0.0.0", "a=unix:///s,address=1.2.3.4", "a=tcp://1.2.3.4:1,tls=/x=y,address=1.2.3.4",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseEngine(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), `engine "`) {
				t.Errorf("error %q does not name the engine", err)
			}
			return
		}
		if err := checkName(spec.Name); err != nil {
			t.Errorf("accepted name %q: %v", spec.Name, err)
		}
		tcp := strings.HasPrefix(spec.URL, "tcp://")
		if !tcp && !strings.HasPrefix(spec.URL, "unix:///") {
			t.Errorf("accepted URL %q", spec.URL)
		}
		if tcp && spec.TLSDir == "" && !spec.Insecure || spec.TLSDir != "" && spec.Insecure || !tcp && (spec.TLSDir != "" || spec.Insecure) {
			t.Errorf("accepted %+v", spec)
		}
		if tcp && spec.HostAddress() == "" {
			t.Errorf("no host address for %+v", spec)
		}
		if strings.ContainsFunc(spec.String(), badChar) {
			t.Errorf("accepted %q, which holds whitespace, ';' or non-ASCII", s)
		}
		again, err := ParseEngine(spec.String())
		if err != nil || again != spec {
			t.Errorf("%q: String gives %q, which parses to %+v, %v", s, spec.String(), again, err)
		}
		specs, err := ParseEngines(s + ";" + s)
		if err == nil || specs != nil {
			t.Errorf("%q twice is accepted: %v", s, specs)
		}
	})
}
