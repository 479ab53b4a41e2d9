//! Who may read `/status` and `/metrics`: an IP allow-list or a bearer token.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// Addresses and networks (`192.0.2.7`, `10.0.0.0/8`, `::1`, `fd00::/8`).
#[derive(Debug, Clone, Default)]
pub struct AllowList(Vec<(IpAddr, u8)>);

impl AllowList {
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in entries {
            let (addr, bits) = match entry.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (entry.as_str(), None),
            };
            let addr: IpAddr = addr
                .trim()
                .parse()
                .map_err(|_| format!("{entry:?} is not an IP address or network (e.g. 10.0.0.0/8)"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(bits) => bits
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{entry:?}: the prefix length must be 0..={max}"))?,
            };
            nets.push((addr, bits));
        }
        Ok(AllowList(nets))
    }

    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        self.0.iter().any(|(net, bits)| match (net, peer) {
            (IpAddr::V4(net), IpAddr::V4(peer)) => prefix_eq(&net.octets(), &peer.octets(), *bits),
            (IpAddr::V6(net), IpAddr::V6(peer)) => prefix_eq(&net.octets(), &peer.octets(), *bits),
            _ => false,
        })
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let whole = usize::from(bits / 8);
    let rest = bits % 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[whole] & mask) == (b[whole] & mask)
}

/// The token a request carries: `Authorization: Bearer …`, or `token=…` in the query.
pub fn presented_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.or_else(|| {
        query?
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .filter(|t| !t.is_empty())
    })
}

/// Compares in time independent of where the texts differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_addresses() {
        let list = AllowList::parse(&["10.0.0.0/8".into(), "192.0.2.7".into(), "::1".into()]).expect("valid");
        assert!(list.allows("10.200.1.1".parse().expect("ip")));
        assert!(list.allows("192.0.2.7".parse().expect("ip")));
        assert!(!list.allows("192.0.2.8".parse().expect("ip")));
        assert!(list.allows("::1".parse().expect("ip")));
        assert!(list.allows("::ffff:10.1.2.3".parse().expect("ip")), "v4-mapped v6");
        assert!(!list.allows("11.0.0.1".parse().expect("ip")));
        assert!(AllowList::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(AllowList::parse(&["nonsense".into()]).is_err());
        let odd = AllowList::parse(&["192.168.4.0/22".into()]).expect("valid");
        assert!(odd.allows("192.168.7.255".parse().expect("ip")));
        assert!(!odd.allows("192.168.8.0".parse().expect("ip")));
    }
}
