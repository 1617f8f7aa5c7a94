package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the file names of everything the control plane needs. All files
// live in <data-dir>/pki and are reused on restart.
type pki struct {
	dir string

	caCert, caKey               string
	servingCert, servingKey     string // apiserver, scheduler and controller-manager serving cert
	adminCert, adminKey         string // CN=kubernetes-admin, O=system:masters
	schedulerCert, schedulerKey string // CN=system:kube-scheduler
	kcmCert, kcmKey             string // CN=system:kube-controller-manager
	saKey, saPub                string // service-account token signing key pair (RSA)

	// Front proxy (request-header authentication, used by aggregated API
	// servers and by the scheduler's and controller-manager's delegated
	// authentication): a second CA and the apiserver's proxy client cert.
	frontProxyCACert, frontProxyCAKey string
	frontProxyCert, frontProxyKey     string // CN=front-proxy-client
}

const certValidity = 10 * 365 * 24 * time.Hour

func newPKI(dir string) *pki {
	f := func(name string) string { return filepath.Join(dir, name) }
	return &pki{
		dir:           dir,
		caCert:        f("ca.crt"),
		caKey:         f("ca.key"),
		servingCert:   f("serving.crt"),
		servingKey:    f("serving.key"),
		adminCert:     f("admin.crt"),
		adminKey:      f("admin.key"),
		schedulerCert: f("scheduler.crt"),
		schedulerKey:  f("scheduler.key"),
		kcmCert:       f("controller-manager.crt"),
		kcmKey:        f("controller-manager.key"),
		saKey:         f("sa.key"),
		saPub:         f("sa.pub"),

		frontProxyCACert: f("front-proxy-ca.crt"),
		frontProxyCAKey:  f("front-proxy-ca.key"),
		frontProxyCert:   f("front-proxy-client.crt"),
		frontProxyKey:    f("front-proxy-client.key"),
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

type leaf struct {
	cert, key string
	tmpl      *x509.Certificate
}

// ensure creates whatever is missing. If a CA is missing, every certificate
// signed by it is recreated.
func (p *pki) ensure() error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return err
	}
	for _, set := range []struct {
		caCert, caKey, caName string
		leaves                []leaf
	}{
		{p.caCert, p.caKey, "dcu-dra-controlplane-ca", []leaf{
			{p.servingCert, p.servingKey, &x509.Certificate{
				Subject:     pkix.Name{CommonName: "kube-apiserver"},
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
					"kubernetes.default.svc.cluster.local"},
				IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP(serviceIP)},
			}},
			{p.adminCert, p.adminKey, &x509.Certificate{
				Subject:     pkix.Name{CommonName: "kubernetes-admin", Organization: []string{"system:masters"}},
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}},
			{p.schedulerCert, p.schedulerKey, &x509.Certificate{
				Subject:     pkix.Name{CommonName: "system:kube-scheduler"},
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}},
			{p.kcmCert, p.kcmKey, &x509.Certificate{
				Subject:     pkix.Name{CommonName: "system:kube-controller-manager"},
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}},
		}},
		{p.frontProxyCACert, p.frontProxyCAKey, "dcu-dra-front-proxy-ca", []leaf{
			{p.frontProxyCert, p.frontProxyKey, &x509.Certificate{
				Subject:     pkix.Name{CommonName: "front-proxy-client"},
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}},
		}},
	} {
		forceLeaves := false
		if !exists(set.caCert) || !exists(set.caKey) {
			if err := createCA(set.caCert, set.caKey, set.caName); err != nil {
				return fmt.Errorf("creating CA %s: %w", set.caCert, err)
			}
			forceLeaves = true
		}
		ca, caKey, err := loadCertAndKey(set.caCert, set.caKey)
		if err != nil {
			return fmt.Errorf("loading CA %s: %w", set.caCert, err)
		}
		for _, l := range set.leaves {
			if !forceLeaves && exists(l.cert) && exists(l.key) {
				continue
			}
			if err := createLeaf(l.cert, l.key, l.tmpl, ca, caKey); err != nil {
				return fmt.Errorf("creating %s: %w", l.cert, err)
			}
		}
	}
	if !exists(p.saKey) || !exists(p.saPub) {
		if err := p.createSAKey(); err != nil {
			return fmt.Errorf("creating service-account key: %w", err)
		}
	}
	return nil
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func keyID(pub crypto.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha1.Sum(der)
	return sum[:]
}

func createCA(certPath, keyPath, commonName string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	sn, err := serialNumber()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          keyID(key.Public()),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	return writeCertAndKey(certPath, keyPath, der, key)
}

func createLeaf(certPath, keyPath string, tmpl *x509.Certificate, ca *x509.Certificate, caKey crypto.Signer) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	sn, err := serialNumber()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl.SerialNumber = sn
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(certValidity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	tmpl.AuthorityKeyId = ca.SubjectKeyId
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	return writeCertAndKey(certPath, keyPath, der, key)
}

func (p *pki) createSAKey() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	if err := writeFileAtomic(p.saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(p.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600)
}

func writeCertAndKey(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}

func loadCertAndKey(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no certificate", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, fmt.Errorf("%s: no key", keyPath)
	}
	var signer crypto.Signer
	switch kb.Type {
	case "EC PRIVATE KEY":
		signer, err = x509.ParseECPrivateKey(kb.Bytes)
	case "RSA PRIVATE KEY":
		signer, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	case "PRIVATE KEY":
		var k any
		k, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err == nil {
			var ok bool
			if signer, ok = k.(crypto.Signer); !ok {
				err = errors.New("unsupported key type")
			}
		}
	default:
		err = fmt.Errorf("unsupported PEM block %q", kb.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	return cert, signer, nil
}

// writeFileAtomic writes data to a temporary file in the same directory and
// renames it over path, so readers never see a partial file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // no-op after a successful rename
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(name, path)
}
