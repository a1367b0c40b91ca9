//! The address pool: a private range cut into /30 point-to-point subnets, one per run (network, host
//! end = .1, job = .2, broadcast). /30 rather than a shared bridge: nothing machine-wide to create or
//! remove, each run's cleanup is deleting its own veth, and jobs cannot see each other at layer 2.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::NetError;
use super::netlink::Route;

/// A range such as 10.89.0.0/16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    base: u32,
    prefix: u8,
}

/// The environment variable that overrides the default pool.
pub const POOL_ENV: &str = "DSTACK_NETWORK_POOL";

/// Defaults tried in order: the first /16 that no host route overlaps.
fn default_candidates() -> impl Iterator<Item = Pool> {
    (89u32..=127).map(|b| Pool {
        base: (10 << 24) | (b << 16),
        prefix: 16,
    })
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

impl FromStr for Pool {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Pool, NetError> {
        let bad = || NetError::BadPool(s.to_string());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=29).contains(&prefix) {
            return Err(bad());
        }
        Ok(Pool {
            base: u32::from(addr) & mask(prefix),
            prefix,
        })
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl Pool {
    /// How many /30 subnets it holds.
    pub fn len(&self) -> u32 {
        1 << (30 - self.prefix as u32)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The network address of subnet `i`.
    pub fn subnet(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 4 * i)
    }

    /// Whether this pool and `net/len` share any address.
    pub fn overlaps(&self, net: Ipv4Addr, len: u8) -> bool {
        let common = mask(self.prefix.min(len));
        (u32::from(net) & common) == (self.base & common)
    }

    /// The subnet index holding `addr`, if it is in the pool.
    pub fn index_of(&self, addr: Ipv4Addr) -> Option<u32> {
        let a = u32::from(addr);
        (a & mask(self.prefix) == self.base).then(|| (a - self.base) / 4)
    }

    /// The configured pool (`DSTACK_NETWORK_POOL` when `configured` is none) checked against the host's
    /// routes, or the first default that overlaps none. Routes through our own interfaces (`ours`) and
    /// default routes do not count.
    pub(super) fn choose(
        configured: Option<Pool>,
        routes: &[Route],
        ours: impl Fn(&Route) -> bool,
    ) -> Result<Pool, NetError> {
        let configured = match configured {
            Some(p) => Some(p),
            None => match std::env::var(POOL_ENV) {
                Ok(v) if !v.trim().is_empty() => Some(v.parse()?),
                _ => None,
            },
        };
        let foreign: Vec<&Route> = routes.iter().filter(|r| r.len > 0 && !ours(r)).collect();
        let clash = |p: &Pool| foreign.iter().find(|r| p.overlaps(r.dst, r.len)).copied();
        if let Some(pool) = configured {
            return match clash(&pool) {
                Some(r) => Err(NetError::PoolOverlaps {
                    pool: pool.to_string(),
                    route: format!("{}/{}", r.dst, r.len),
                }),
                None => Ok(pool),
            };
        }
        default_candidates()
            .find(|p| clash(p).is_none())
            .ok_or(NetError::NoFreePool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(s: &str) -> Route {
        let (a, l) = s.split_once('/').unwrap();
        Route {
            dst: a.parse().unwrap(),
            len: l.parse().unwrap(),
            oif: Some(2),
        }
    }

    #[test]
    fn pools_parse_and_split_into_slash_30s() {
        let p: Pool = "10.89.1.7/16".parse().unwrap();
        assert_eq!(p.to_string(), "10.89.0.0/16");
        assert_eq!(p.len(), 16384);
        assert_eq!(p.subnet(1), Ipv4Addr::new(10, 89, 0, 4));
        assert_eq!(p.index_of(Ipv4Addr::new(10, 89, 0, 6)), Some(1));
        assert_eq!(p.index_of(Ipv4Addr::new(10, 90, 0, 6)), None);
        assert_eq!(p.index_of(Ipv4Addr::new(10, 0, 0, 1)), None);
        assert!("10.89.0.0".parse::<Pool>().is_err());
        assert!("10.89.0.0/30".parse::<Pool>().is_err());
        assert!("x/16".parse::<Pool>().is_err());
    }

    #[test]
    fn the_default_pool_avoids_host_routes_but_not_our_own_or_the_default_route() {
        let routes = [
            route("0.0.0.0/0"),
            route("10.89.0.0/24"),
            route("10.0.0.0/15"),
        ];
        let p = Pool::choose(None, &routes, |_| false).unwrap();
        assert_eq!(p.to_string(), "10.90.0.0/16");
        let p = Pool::choose(None, &routes, |r| r.dst == Ipv4Addr::new(10, 89, 0, 0)).unwrap();
        assert_eq!(p.to_string(), "10.89.0.0/16");
        let wide = [route("10.0.0.0/8")];
        assert!(matches!(
            Pool::choose(None, &wide, |_| false),
            Err(NetError::NoFreePool)
        ));
        let err =
            Pool::choose(Some("10.89.0.0/16".parse().unwrap()), &routes, |_| false).unwrap_err();
        assert!(err.to_string().contains("10.89.0.0/24"), "{err}");
    }
}
