//! `[nginx]`'s edge settings, parsed at load: the peers whose word on the client's address nginx
//! takes (`trusted_proxies`), and the browser origins it answers CORS for (`cors_origins`). Both
//! become nginx config in `shopctl nginx render`, so what reaches the render is already checked.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;

/// A load balancer's address, or a network of them (`10.0.0.0/8`): nginx takes the client's
/// address from `X-Forwarded-For` (or the PROXY protocol) only from a peer in one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(try_from = "String", into = "String")]
pub struct TrustedProxy(ipnet::IpNet);

impl TrustedProxy {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl FromStr for TrustedProxy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let net = match s.parse::<IpAddr>() {
            Ok(ip) => ipnet::IpNet::from(ip),
            Err(_) => s.parse::<ipnet::IpNet>().map_err(|_| format!("{s:?} is neither an IP address nor a CIDR"))?,
        };
        // nginx takes `10.0.0.7/8` as `10.0.0.0/8` with a warning: say it here instead.
        if net.trunc() != net {
            return Err(format!("{s:?} has host bits set: did you mean \"{}\"?", net.trunc()));
        }
        Ok(Self(net))
    }
}

impl TryFrom<String> for TrustedProxy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<TrustedProxy> for String {
    fn from(p: TrustedProxy) -> String {
        p.to_string()
    }
}

impl fmt::Display for TrustedProxy {
    /// A single address without its `/32` or `/128`, as nginx and operators write one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// A browser origin allowed to call the API: exactly `scheme://host[:port]`, as browsers send it in
/// `Origin` (lower case, no default port, no path). nginx compares it byte for byte, so anything
/// else would never match; refused at load, with the spelling that would.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(try_from = "String", into = "String")]
pub struct CorsOrigin(String);

impl CorsOrigin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CorsOrigin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.contains('*') {
            return Err(format!("{s:?}: wildcards are not taken, list each origin"));
        }
        let url = url::Url::parse(s).map_err(|e| format!("{s:?} is not an origin ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{s:?} is not an http or https origin"));
        }
        let origin = url.origin().ascii_serialization();
        if origin != s {
            return Err(format!("{s:?} is not an origin as browsers send it: write {origin:?}"));
        }
        Ok(Self(origin))
    }
}

impl TryFrom<String> for CorsOrigin {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<CorsOrigin> for String {
    fn from(o: CorsOrigin) -> String {
        o.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_trusted_proxy_is_an_address_or_a_network() {
        let one: TrustedProxy = "10.0.0.7".parse().unwrap();
        assert_eq!(one.to_string(), "10.0.0.7");
        assert!(one.contains("10.0.0.7".parse().unwrap()) && !one.contains("10.0.0.8".parse().unwrap()));
        let net: TrustedProxy = "10.0.0.0/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains("10.200.0.1".parse().unwrap()));
        assert_eq!("::1".parse::<TrustedProxy>().unwrap().to_string(), "::1");
        assert_eq!("fd00::/8".parse::<TrustedProxy>().unwrap().to_string(), "fd00::/8");
        let e = "10.0.0.7/8".parse::<TrustedProxy>().unwrap_err();
        assert!(e.contains("\"10.0.0.0/8\""), "{e}");
        for bad in ["", "lb.example", "10.0.0.0/33", "10.0.0.1; deny all"] {
            assert!(bad.parse::<TrustedProxy>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_cors_origin_is_exactly_what_browsers_send() {
        for good in ["https://shop.example", "http://localhost:3000", "https://xn--bcher-kva.example"] {
            assert_eq!(good.parse::<CorsOrigin>().unwrap().as_str(), good);
        }
        for (bad, fix) in [
            ("https://shop.example/", "\"https://shop.example\""),
            ("https://Shop.Example", "\"https://shop.example\""),
            ("https://shop.example:443", "\"https://shop.example\""),
            ("https://shop.example/app", "\"https://shop.example\""),
        ] {
            let e = bad.parse::<CorsOrigin>().unwrap_err();
            assert!(e.contains(fix), "{bad}: {e}");
        }
        for bad in ["*", "null", "shop.example", "ftp://shop.example", "https://*.shop.example"] {
            assert!(bad.parse::<CorsOrigin>().is_err(), "{bad:?}");
        }
    }
}
