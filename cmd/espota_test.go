package cmd

import (
	"slices"
	"testing"
)

// TestEspotaSpellings: espota.py's argparse spellings, in any order, give
// the same push command line.
// TestEspotaPortWins: -p is explicit, so it travels as HOST:PORT and wins
// over the port mDNS gives a .local name.
func TestEspotaPortWins(t *testing.T) {
	for in, want := range map[string]string{"dev.local": "dev.local:9999", "10.0.0.5": "10.0.0.5:9999", "fe80::1": "[fe80::1]:9999", "[::1]": "[::1]:9999"} {
		o := &espotaOptions{IP: in, File: "fw.bin", Port: 9999, HostIP: "0.0.0.0", Timeout: 10}
		got, err := o.pushArgs()
		if err != nil || got[len(got)-1] != want {
			t.Errorf("-i %s -p 9999: %q, %v; want target %s", in, got, err, want)
		}
	}
}

func TestEspotaSpellings(t *testing.T) {
	base := []string{"push", "--protocol", "espota", "--port", "3232", "--retries", "3", "--connect-timeout", "25s"}
	for _, c := range []struct {
		args []string
		want []string // between base and "--"
		file string
	}{
		{[]string{"-i", "10.0.0.5", "-f", "fw.bin"}, nil, "fw.bin"},
		{[]string{"-f", "fw.bin", "-i", "10.0.0.5"}, nil, "fw.bin"},
		{[]string{"--ip=10.0.0.5", "--file=fw.bin", "--auth="}, nil, "fw.bin"},
		{[]string{"--ip", "10.0.0.5", "--file", "fw.bin", "-a", ""}, nil, "fw.bin"},
		{[]string{"-i10.0.0.5", "-ffw.bin", "-apw"}, []string{"--password", "pw"}, "fw.bin"},
		{[]string{"-i", "10.0.0.5", "-p", "3232", "--auth=pw", "-f", "fw.bin"}, []string{"--password", "pw"}, "fw.bin"},
		{[]string{"--debug", "--progress", "-i", "10.0.0.5", "-f", "fs.bin", "--spiffs"}, []string{"--filesystem", "-vv"}, "fs.bin"},
		{[]string{"-dr", "-s", "-m", "-i", "10.0.0.5", "-f", "fs.bin"}, []string{"--md5-password", "--filesystem", "-vv"}, "fs.bin"},
		{[]string{"-I", "192.168.1.2", "-P", "40000", "--host_ip=192.168.1.3", "--host_port=40001", "-i", "10.0.0.5", "-f", "fw.bin"},
			[]string{"--host-ip", "192.168.1.3", "--host-port", "40001"}, "fw.bin"},
		{[]string{"-I", "0.0.0.0", "-i", "10.0.0.5", "-f", "fw.bin"}, nil, "fw.bin"},
	} {
		streams, _, _ := TestStreams()
		o := &espotaOptions{}
		cmd := espotaCommand(&app{io: streams, cfg: &config{origins: map[string]origin{}}}, o)
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		got, err := o.pushArgs()
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		want := append(append(slices.Clone(base), c.want...), "--", c.file, "10.0.0.5:3232")
		if !slices.Equal(got, want) {
			t.Errorf("%q:\n got %q\nwant %q", c.args, got, want)
		}
	}
}

func TestEspotaArgChecks(t *testing.T) {
	for _, args := range [][]string{
		{"-p", "0"}, {"-p", "70000"}, {"-P", "-1"}, {"-t", "0"}, {"-I", "somewhere"},
	} {
		streams, _, _ := TestStreams()
		o := &espotaOptions{}
		cmd := espotaCommand(&app{io: streams, cfg: &config{origins: map[string]origin{}}}, o)
		if err := cmd.ParseFlags(append(args, "-i", "10.0.0.5", "-f", "fw.bin")); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if _, err := o.pushArgs(); exitCode(err) != ExitUsage {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}
