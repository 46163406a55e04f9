// What nginx's own config language cannot say, in njs (nginx's JavaScript module), loaded by
// shopgate.conf.in. `shopctl nginx render --output` writes this file beside the config it renders.

// A control character (any below a space but tab, and DEL): HTTP allows none in a header.
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;

// "1" when a request header's name or value holds a control character, else "". nginx itself
// passes such values on, and the services' HTTP parser (hyper's) refuses them with an empty 400:
// for the verifier's check that is an answer auth_request cannot use (so a 503 to the client), for
// the other routes an answer that is not JSON. The server block refuses them first, with JSON.
function headerFault(r) {
    const headers = r.rawHeadersIn;
    for (let i = 0; i < headers.length; i++) {
        if (CONTROL.test(headers[i][0]) || CONTROL.test(headers[i][1])) {
            return '1';
        }
    }
    return '';
}

// The request's path for the access log: as nginx decoded it ($uri), with every byte outside
// printable ASCII (and '%' itself) percent-escaped. The config's map asks only for the paths that
// hold such a byte; it logs the others as they are. escape=json escapes quotes, backslashes and
// control characters but writes bytes >= 0x80 as they are, so a path with raw or escaped high
// bytes that are not UTF-8 made a line no strict JSON parser reads.
function logPath(r) {
    const bytes = r.rawVariables.uri;
    if (!bytes) {
        return '';
    }
    let plain = true;
    for (let i = 0; i < bytes.length; i++) {
        if (bytes[i] < 0x20 || bytes[i] > 0x7e || bytes[i] === 0x25) {
            plain = false;
            break;
        }
    }
    if (plain) {
        return r.variables.uri;
    }
    let out = '';
    for (let i = 0; i < bytes.length; i++) {
        const b = bytes[i];
        if (b < 0x20 || b > 0x7e || b === 0x25) {
            out += (b < 0x10 ? '%0' : '%') + b.toString(16).toUpperCase();
        } else {
            out += String.fromCharCode(b);
        }
    }
    return out;
}

// The auth cache's key: the SHA-256 of the Authorization header, in hex. nginx writes a cache
// entry's key into its file, so keyed by the header itself every cached token would sit there in
// clear; a hash names the same entry and cannot be turned back into the token.
function tokenHash(r) {
    const authorization = r.headersIn.Authorization;
    if (!authorization) {
        return '';
    }
    return require('crypto').createHash('sha256').update(authorization).digest('hex');
}

export default { headerFault, logPath, tokenHash };
