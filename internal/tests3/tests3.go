// Package tests3 runs versitygw (an S3-compatible server over a temporary
// folder) for a test, on 127.0.0.1 and a free port, with one bucket: the
// tests of the S3 store run against a real server, inside their own network
// namespace.
package tests3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/ots-ota/ots-ota/auth"
)

// Server is a running versitygw with one bucket.
type Server struct {
	endpoint, access, bucket string
	secret                   auth.Secret
	dir                      string

	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd ended
}

// Bucket is the name of the bucket Start creates.
const Bucket = "ots-ota-test"

// Binary returns versitygw's path: $OTS_OTA_VERSITYGW, else on PATH, else
// in $GOPATH/bin (where `go install` puts it); "" when none is found.
func Binary() string {
	if p := os.Getenv("OTS_OTA_VERSITYGW"); p != "" {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	exe := "versitygw"
	if runtime.GOOS == "windows" {
		exe += ".exe"
	}
	dirs := []string{os.Getenv("GOBIN")}
	for _, gp := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(gp, "bin"))
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, exe)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// Start runs versitygw for the test (t.Cleanup stops it) and creates the
// bucket [Bucket]. Without versitygw ($OTS_OTA_VERSITYGW, PATH or
// $GOPATH/bin): t.Skip with one line, unless CI=true, then t.Fatal.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("versitygw is required (CI=true): go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
		}
		t.Skip("no versitygw here: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 (or set OTS_OTA_VERSITYGW) to run this test")
	}
	secret := make([]byte, 20)
	_, _ = rand.Read(secret)
	s := &Server{access: "ots-ota-test", secret: auth.NewSecret(hex.EncodeToString(secret)), bucket: Bucket, dir: t.TempDir()}
	root := filepath.Join(s.dir, "root")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatalf("tests3: %v", err)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			if log, err := os.ReadFile(s.logFile()); err == nil && len(log) > 0 {
				t.Logf("versitygw's log:\n%s", log)
			}
		}
	})
	// A port found free can be taken before versitygw binds it: try again.
	var err error
	for range 5 {
		if err = s.start(bin, root); err == nil {
			break
		}
		s.stop()
	}
	if err != nil {
		t.Fatalf("tests3: %v", err)
	}
	if err := s.makeBucket(); err != nil {
		t.Fatalf("tests3: cannot create the bucket: %v", err)
	}
	return s
}

func (s *Server) logFile() string { return filepath.Join(s.dir, "versitygw.log") }

func (s *Server) start(bin, root string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("no free port on 127.0.0.1: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	s.endpoint = "http://" + addr
	log, err := os.Create(s.logFile())
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(bin, "--port", addr, "--quiet", "posix", root)
	// The keys go in the environment, not on the command line other
	// processes can read; the server's own settings are never inherited.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VGW_") && !strings.HasPrefix(kv, "ROOT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "ROOT_ACCESS_KEY_ID="+s.access, "ROOT_SECRET_ACCESS_KEY="+s.secret.Reveal())
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start versitygw: %v", err)
	}
	s.cmd, s.exit = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.exit) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.exit:
			return fmt.Errorf("versitygw ended at start on %s (its log is shown when the test fails)", addr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw took no connection on %s within 20 s", addr)
		}
	}
}

func (s *Server) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

func (s *Server) makeBucket() error {
	c, err := s.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{})
}

// client is a root client of the server, for the test's own setup.
func (s *Server) client() (*minio.Client, error) {
	if s.endpoint == "" {
		return nil, errors.New("not started")
	}
	return minio.New(strings.TrimPrefix(s.endpoint, "http://"), &minio.Options{
		Creds:        credentials.NewStaticV4(s.access, s.secret.Reveal(), ""),
		BucketLookup: minio.BucketLookupPath,
	})
}

// Client is a minio-go client of the server with the root user's keys,
// for a test to look at or change the bucket behind the code it tests.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := s.client()
	if err != nil {
		t.Fatalf("tests3: %v", err)
	}
	return c
}

// Endpoint is http://127.0.0.1:PORT.
func (s *Server) Endpoint() string { return s.endpoint }

// AccessKey is the root user's access key.
func (s *Server) AccessKey() string { return s.access }

// SecretKey is the root user's secret key (random per server).
func (s *Server) SecretKey() auth.Secret { return s.secret }

// Bucket is the bucket created at Start ([Bucket]).
func (s *Server) Bucket() string { return s.bucket }

// Stop ends the server now (a test of what a client says when its store
// goes away); t.Cleanup stops it anyway.
func (s *Server) Stop() { s.stop() }

// Front starts what stands for the user's CDN or proxy in front of the
// private bucket, on 127.0.0.1 (t.Cleanup stops it), and returns its base
// URL: the public URL of the store prefix. A GET of <base>/<rest> is
// signed (a presigned URL for <prefix>/<rest>) and forwarded with the
// request's headers, Range included; the answer comes back as the server
// gave it (206 and Content-Range for a range).
func (s *Server) Front(t testing.TB, prefix string) string {
	t.Helper()
	c := s.Client(t)
	prefix = strings.Trim(prefix, "/")
	p := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		key := strings.TrimPrefix(r.In.URL.Path, "/")
		if prefix != "" {
			key = prefix + "/" + key
		}
		u, err := c.PresignedGetObject(r.In.Context(), s.bucket, key, time.Hour, nil)
		if err != nil {
			t.Errorf("tests3: cannot sign a GET of %s: %v", key, err)
			return
		}
		r.Out.URL = u
		r.Out.Host = u.Host
	}}
	ts := httptest.NewServer(p)
	t.Cleanup(ts.Close)
	return ts.URL
}
