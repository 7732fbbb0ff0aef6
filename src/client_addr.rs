//! The client address of a request: the TCP peer, or — when the peer is one of the
//! `TRUSTED_PROXIES` — the address its forwarding header names (RFC 7239 `Forwarded` or
//! `X-Forwarded-For`). One middleware resolves it once per request into [`ClientAddr`], which
//! the rate limits key on and the request log shows.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, HeaderName, request::Parts},
    middleware::Next,
    response::Response,
};
use ipnet::IpNet;

/// Which header a trusted proxy appends the client address to. Only that one is read: a
/// proxy passes every other header through as the client wrote it, so reading whichever
/// header is present would let a client choose its own address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardingHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, most ingresses and PaaS routers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

/// The proxies whose forwarding headers are believed, and which header they write.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    pub networks: Vec<IpNet>,
    pub header: ForwardingHeader,
}

impl TrustedProxies {
    fn trusts(&self, address: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(&address))
    }

    /// The client address of a request from `peer` carrying `headers`.
    ///
    /// From an untrusted peer, `peer` itself: its forwarding headers are ignored. From a
    /// trusted one, the right-most address in the forwarding chain (every line of the header,
    /// in order) that is not itself a trusted proxy — the left part of the chain is whatever
    /// the client wrote. A chain of trusted proxies only gives its left-most address. An entry
    /// that must be read but is malformed, `unknown` or obfuscated (RFC 7239 §6), or a chain
    /// with no entries, gives `peer`: never an error.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let name = match self.header {
            ForwardingHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            ForwardingHeader::Forwarded => HeaderName::from_static("forwarded"),
        };
        let mut last_trusted = None;
        // Right to left: the last line, then its last element, first.
        for line in headers.get_all(&name).iter().rev() {
            let Ok(line) = line.to_str() else {
                return peer;
            };
            let hops: Box<dyn Iterator<Item = Option<IpAddr>>> = match self.header {
                ForwardingHeader::XForwardedFor => {
                    Box::new(line.split(',').rev().map(x_forwarded_for_entry))
                }
                ForwardingHeader::Forwarded => Box::new(
                    rfc7239::parse(line)
                        .rev()
                        .map(|element| element.ok()?.forwarded_for?.ip().copied()),
                ),
            };
            for hop in hops {
                let Some(hop) = hop.map(|hop| hop.to_canonical()) else {
                    return peer;
                };
                if !self.trusts(hop) {
                    return hop;
                }
                last_trusted = Some(hop);
            }
        }
        last_trusted.unwrap_or(peer)
    }
}

/// One `X-Forwarded-For` entry: an address, with or without a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`), as some proxies write it.
fn x_forwarded_for_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|address| address.ip()))
}

/// The client address [`resolve`] found for this request. As an extractor, it is
/// `0.0.0.0` only when the router runs without connection info (never in the service).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(ClientAddr(IpAddr::V4(Ipv4Addr::UNSPECIFIED))))
    }
}

/// Middleware: puts the request's [`ClientAddr`] into its extensions.
pub async fn resolve(
    State(proxies): State<std::sync::Arc<TrustedProxies>>,
    mut request: Request<Body>,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let client = proxies.client_address(peer.ip(), request.headers());
        request.extensions_mut().insert(ClientAddr(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROXY: &str = "10.0.0.9";

    fn proxies(header: ForwardingHeader) -> TrustedProxies {
        TrustedProxies {
            networks: ["10.0.0.0/24", "2001:db8:ffff::/48"]
                .iter()
                .map(|net| net.parse().unwrap())
                .collect(),
            header,
        }
    }

    fn resolve_with(header: ForwardingHeader, peer: &str, lines: &[&str]) -> String {
        let name = match header {
            ForwardingHeader::XForwardedFor => "x-forwarded-for",
            ForwardingHeader::Forwarded => "forwarded",
        };
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(name, line.parse().unwrap());
        }
        proxies(header)
            .client_address(peer.parse().unwrap(), &headers)
            .to_string()
    }

    #[test]
    fn x_forwarded_for_gives_the_right_most_untrusted_address() {
        for (peer, lines, expected, why) in [
            (PROXY, &[][..], PROXY, "no header: the proxy itself"),
            (PROXY, &["192.0.2.1"][..], "192.0.2.1", "one hop"),
            (
                PROXY,
                &["198.51.100.66, 192.0.2.1"][..],
                "192.0.2.1",
                "a spoofed left part is ignored",
            ),
            (
                PROXY,
                &["192.0.2.1, 10.0.0.7"][..],
                "192.0.2.1",
                "a second trusted proxy is skipped",
            ),
            (
                PROXY,
                &["198.51.100.66", "192.0.2.1, 10.0.0.7"][..],
                "192.0.2.1",
                "lines are one list, in order",
            ),
            (
                PROXY,
                &["192.0.2.1", "10.0.0.7"][..],
                "192.0.2.1",
                "the last line is read first",
            ),
            (
                PROXY,
                &["10.0.0.5, 10.0.0.7"][..],
                "10.0.0.5",
                "only proxies: the left-most",
            ),
            (
                PROXY,
                &[" 192.0.2.1 "][..],
                "192.0.2.1",
                "spaces around entries",
            ),
            (
                PROXY,
                &["192.0.2.1:4711"][..],
                "192.0.2.1",
                "an IPv4 address with a port",
            ),
            (PROXY, &["2001:db8::1"][..], "2001:db8::1", "IPv6"),
            (
                PROXY,
                &["[2001:db8::1]:4711"][..],
                "2001:db8::1",
                "IPv6 with a port",
            ),
            (
                PROXY,
                &["::ffff:192.0.2.1"][..],
                "192.0.2.1",
                "an IPv4-mapped IPv6 address is IPv4",
            ),
            (
                "2001:db8:ffff::1",
                &["192.0.2.1"][..],
                "192.0.2.1",
                "an IPv6 proxy",
            ),
            (
                "::ffff:10.0.0.9",
                &["192.0.2.1"][..],
                "192.0.2.1",
                "an IPv4 proxy seen as IPv4-mapped IPv6",
            ),
            (
                "192.0.2.200",
                &["198.51.100.66"][..],
                "192.0.2.200",
                "an untrusted peer's header is ignored",
            ),
            (PROXY, &["garbage"][..], PROXY, "malformed: the peer"),
            (
                PROXY,
                &["192.0.2.1, "][..],
                PROXY,
                "an empty right-most entry: the peer",
            ),
            (PROXY, &["unknown"][..], PROXY, "unknown: the peer"),
            (
                PROXY,
                &["garbage, 192.0.2.1"][..],
                "192.0.2.1",
                "garbage left of the client is never read",
            ),
            (
                PROXY,
                &["192.0.2.1, garbage, 10.0.0.7"][..],
                PROXY,
                "garbage written between proxies: the peer",
            ),
        ] {
            assert_eq!(
                resolve_with(ForwardingHeader::XForwardedFor, peer, lines),
                expected,
                "{why}: {lines:?} from {peer}"
            );
        }
    }

    #[test]
    fn forwarded_gives_the_right_most_untrusted_address() {
        for (lines, expected, why) in [
            (&["for=192.0.2.1"][..], "192.0.2.1", "one hop"),
            (
                &["For=192.0.2.1;proto=https;by=10.0.0.9"][..],
                "192.0.2.1",
                "parameters in any case and order",
            ),
            (
                &["for=198.51.100.66, for=192.0.2.1"][..],
                "192.0.2.1",
                "a spoofed left part is ignored",
            ),
            (
                &["for=198.51.100.66", "for=192.0.2.1, for=10.0.0.7"][..],
                "192.0.2.1",
                "lines are one list",
            ),
            (
                &["for=\"192.0.2.1:4711\""][..],
                "192.0.2.1",
                "a quoted address with a port",
            ),
            (
                &["for=\"[2001:db8::1]:4711\""][..],
                "2001:db8::1",
                "quoted IPv6 with a port",
            ),
            (&["for=\"[2001:db8::1]\""][..], "2001:db8::1", "quoted IPv6"),
            (&["for=unknown"][..], PROXY, "unknown: the peer"),
            (
                &["for=_hidden"][..],
                PROXY,
                "an obfuscated identifier: the peer",
            ),
            (
                &["for=192.0.2.1, for=unknown"][..],
                PROXY,
                "unknown right of the client: the peer",
            ),
            (&["proto=https"][..], PROXY, "no for=: the peer"),
            (&["for=not-an-address"][..], PROXY, "malformed: the peer"),
            (
                &["for=2001:db8::1"][..],
                PROXY,
                "unbracketed IPv6 is malformed (RFC 7239 §6)",
            ),
            (
                &["nonsense, for=192.0.2.1"][..],
                "192.0.2.1",
                "garbage left of the client is never read",
            ),
            (
                &["for=10.0.0.5"][..],
                "10.0.0.5",
                "only proxies: the left-most",
            ),
        ] {
            assert_eq!(
                resolve_with(ForwardingHeader::Forwarded, PROXY, lines),
                expected,
                "{why}: {lines:?}"
            );
        }
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let mut headers = HeaderMap::new();
        headers.insert("forwarded", "for=198.51.100.66".parse().unwrap());
        headers.insert("x-forwarded-for", "192.0.2.1".parse().unwrap());
        let peer = PROXY.parse().unwrap();
        assert_eq!(
            proxies(ForwardingHeader::XForwardedFor)
                .client_address(peer, &headers)
                .to_string(),
            "192.0.2.1"
        );
        assert_eq!(
            proxies(ForwardingHeader::Forwarded)
                .client_address(peer, &headers)
                .to_string(),
            "198.51.100.66"
        );
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "192.0.2.1".parse().unwrap());
        let peer: IpAddr = PROXY.parse().unwrap();
        assert_eq!(
            TrustedProxies::default().client_address(peer, &headers),
            peer
        );
    }
}
