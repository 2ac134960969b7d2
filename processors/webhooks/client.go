package webhooks

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/ssrf"
)

// newHTTPClient builds the delivery client: connect and total timeouts,
// keep-alive pools sized for the per-endpoint concurrency, TLS verified,
// proxies ignored (a proxy would bypass the guard), redirects not followed,
// and every connection checked by the SSRF guard on the address dialled.
// It is not wrapped in otelhttp: the attempt span is the client span and
// send injects its traceparent (otelhttp cost a third of the throughput in
// the benchmark).
func newHTTPClient(cfg config.Webhooks, g *ssrf.Guard) *http.Client {
	connect := cfg.Timeouts.Connect
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           g.DialContext(connect, 30*time.Second),
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   connect,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          cfg.Concurrency,
		MaxIdleConnsPerHost:   cfg.PerEndpoint,
		MaxConnsPerHost:       0,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.Timeouts.Total,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   cfg.Timeouts.Total,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// traceContext sends the attempt's W3C trace context to the partner.
var traceContext = propagation.TraceContext{}

// Class is how an attempt's outcome is handled.
type Class int

// Attempt classes.
const (
	Delivered Class = iota // 2xx
	Retryable              // 408, 429, 5xx, timeout, connection error
	Permanent              // other 4xx, 3xx, refused address, bad URL: straight to the DLQ
	Gone                   // 410: the endpoint is disabled
)

// Attempt is the result of one HTTP attempt.
type Attempt struct {
	Class      Class
	Reason     Reason // what happened, when not delivered
	StatusCode int
	Err        string
	Latency    time.Duration
	RetryAfter time.Duration // from a 429's Retry-After
	At         time.Time
}

// Request is what one attempt sends.
type Request struct {
	URL       string
	ID        string // webhook-id
	EventType string
	Body      []byte
	Secrets   []string
	Headers   map[string]string
}

var (
	contentTypeJSON = []string{"application/json"}
	userAgent       = []string{"partners-engine-webhooks/1"}
)

// send makes one signed attempt. ctx carries the attempt's span.
func send(ctx context.Context, hc *http.Client, maxBody int64, r Request, now time.Time) Attempt {
	a := Attempt{At: now}
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		a.Class, a.Reason, a.Err = Permanent, ReasonInvalidURL, "invalid webhook URL"
		return a
	}
	sig, err := Sign(r.Secrets, r.ID, now, r.Body)
	if err != nil {
		a.Class, a.Reason, a.Err = Permanent, ReasonNoSecret, err.Error()
		return a
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		a.Class, a.Reason, a.Err = Permanent, ReasonInvalidURL, "invalid webhook URL"
		return a
	}
	for k, v := range r.Headers {
		req.Header.Set(k, v)
	}
	// Canonical keys written directly: no canonicalization per delivery.
	h := req.Header
	h["Content-Type"] = contentTypeJSON
	h["User-Agent"] = userAgent
	h["Webhook-Id"] = []string{r.ID}
	h["Webhook-Timestamp"] = []string{strconv.FormatInt(now.Unix(), 10)}
	h["Webhook-Signature"] = []string{sig}
	h["X-Partner-Event"] = []string{r.EventType}
	h["X-Idempotency-Key"] = h["Webhook-Id"]
	traceContext.Inject(ctx, propagation.HeaderCarrier(h)) // traceparent of the attempt span
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		a.Latency = time.Since(start)
		a.Reason, a.Err = transportReason(err)
		a.Class = Retryable
		if a.Reason == ReasonBlocked {
			a.Class = Permanent
		}
		return a
	}
	// Read up to the cap so the connection can be reused; never more.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	a.Latency = time.Since(start)
	a.StatusCode = resp.StatusCode
	a.Class = classify(resp.StatusCode)
	if a.Class != Delivered {
		a.Reason, a.Err = ReasonHTTPStatus, "HTTP "+resp.Status
		if a.Class == Gone {
			a.Reason = ReasonGone
		}
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		a.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return a
}

// classify maps an HTTP status to the delivery policy: the one place it is decided.
func classify(status int) Class {
	switch {
	case status >= 200 && status < 300:
		return Delivered
	case status == http.StatusGone:
		return Gone
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		return Retryable
	default: // 1xx, 3xx (redirects are not followed), other 4xx
		return Permanent
	}
}

// retryAfter parses Retry-After: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// transportReason classifies a transport error and describes it without
// the URL (it may carry a partner's query-string token): the one place it
// is decided.
func transportReason(err error) (Reason, string) {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var (
		dnsErr  *net.DNSError
		ne      net.Error
		certErr *tls.CertificateVerificationError
		recErr  tls.RecordHeaderError
		alert   tls.AlertError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
	)
	switch {
	case errors.Is(err, ssrf.ErrBlocked):
		return ReasonBlocked, "blocked address: " + err.Error()
	case errors.As(err, &dnsErr):
		return ReasonDNS, "DNS: " + dnsErr.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonConnRefused, "connection refused"
	case errors.As(err, &certErr), errors.As(err, &recErr), errors.As(err, &alert),
		errors.As(err, &unknown), errors.As(err, &host), errors.As(err, &invalid):
		return ReasonTLS, "TLS: " + err.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout, "timeout: " + err.Error()
	}
	return ReasonConnection, "connection error: " + err.Error()
}
