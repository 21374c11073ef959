package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testbroker"
)

// pki writes a CA and a server certificate for 127.0.0.1 signed by it;
// it returns the files of the CA, the server certificate and its key.
func pki(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", der), write("server.key", "EC PRIVATE KEY", keyDER)
}

func TestMQTTS(t *testing.T) {
	t.Parallel()
	caFile, certFile, keyFile := pki(t)
	b := testbroker.Start(t, testbroker.WithTLS(certFile, keyFile), testbroker.KeepLogs())
	if !strings.HasPrefix(b.URL(), "mqtts://") {
		t.Fatal(b.URL())
	}
	c := dial(t, b.URL(), "tls1", func(c *Config) { c.CAFile = caFile })
	in := newInbox()
	if err := c.Subscribe(ctxT(t), "a/b", in.add); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctxT(t), "a/b", []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	if m := in.next(t); string(m.Payload) != "over tls" {
		t.Fatal(m)
	}
	// Without the CA: not trusted, and the error says what to give.
	_, err := Connect(ctxT(t), Config{URL: b.URL(), ClientID: "tls2"})
	if err == nil || !strings.Contains(err.Error(), "give its CA file") || !strings.Contains(err.Error(), b.Addr()) {
		t.Fatalf("err = %v", err)
	}
	// Plain MQTT to the TLS listener: it names what to check.
	_, err = Connect(ctxT(t), Config{URL: "mqtt://" + b.Addr(), ClientID: "tls3"})
	if err == nil || !strings.Contains(err.Error(), b.Addr()) {
		t.Fatalf("err = %v", err)
	}
	t.Logf("plain to TLS: %v", err)
	// A CA file that holds no certificate.
	bad := filepath.Join(t.TempDir(), "bad.pem")
	_ = os.WriteFile(bad, []byte("nothing"), 0o600)
	if _, err := Connect(ctxT(t), Config{URL: b.URL(), ClientID: "tls4", CAFile: bad}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Connect(ctxT(t), Config{URL: "mqtt://" + b.Addr(), ClientID: "tls5", CAFile: caFile}); err == nil || !strings.Contains(err.Error(), "mqtts://") {
		t.Fatalf("err = %v", err)
	}
}
