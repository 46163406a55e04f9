/* For wrk, by LD_PRELOAD: every connection a full TLS handshake.
 *
 *   cc -shared -fPIC -O2 -o full-handshake.so full-handshake.c -ldl
 *   LD_PRELOAD=$PWD/full-handshake.so wrk -H 'Connection: close' https://...
 *
 * wrk keeps one SSL object per connection slot and, after the server closes, reconnects with it
 * (SSL_shutdown, SSL_clear, SSL_connect): the session of the last connection stays in it and the
 * next handshake resumes it (TLS 1.3 PSK, or a TLS 1.2 session ID), which skips the certificate and
 * its signature. So `Connection: close` alone measures resumed handshakes. This drops the session
 * before each handshake starts (SSL_connect is called again while a non-blocking handshake goes
 * on: only the first call of each, still "before", is touched). scripts/bench-tls checks it with an
 * nginx that answers $ssl_session_reused.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_set_session(SSL *ssl, SSL_SESSION *session);
int SSL_in_before(const SSL *ssl);

int SSL_connect(SSL *ssl) {
    static int (*real)(SSL *);
    if (!real) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    if (SSL_in_before(ssl)) SSL_set_session(ssl, NULL);
    return real(ssl);
}
