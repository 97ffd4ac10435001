//! Where a service may send HTTP requests that someone else's input
//! chose: the dispatcher's callbacks (and later webhooks). Without such a
//! policy, whoever names a URL makes the service call it: an internal
//! admin endpoint, a cloud metadata address, a slow trap.
//!
//! An [`EgressPolicy`] is an allow-list of origins (`http://host:port`:
//! that scheme, host and port, whatever the host resolves to) and networks
//! (`10.0.0.0/8`, or one address): a URL whose host is not an allowed
//! origin is allowed only if the address it is reached at lies in an
//! allowed network. The address is checked where the connection is made
//! ([`EgressPolicy::client`] resolves names through the policy), so a name
//! that resolves to an allowed address when checked and to another one
//! when connecting (DNS rebinding) still cannot leave the allow-list.
//! URLs with userinfo are refused: credentials do not travel in URLs.
//!
//! Webhooks go the other way: anyone may register an endpoint on the
//! internet, so [`EgressPolicy::public_internet`] allows every globally
//! routable address and refuses the special ones (loopback, private,
//! link-local — cloud metadata at `169.254.169.254` among them —, shared,
//! multicast, unspecified, documentation, reserved, and IPv6 forms that
//! embed an IPv4 address), unless the list it is given allows them too.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a URL may not be called.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    #[error("not a URL")]
    NotAUrl,
    #[error("only http and https URLs are allowed")]
    Scheme,
    #[error("only https URLs are allowed")]
    HttpsRequired,
    #[error("credentials in the URL are not allowed")]
    Userinfo,
    #[error("{0} is not in the allow-list")]
    NotAllowed(String),
}

/// An allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

/// The allow-list; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    origins: Vec<Origin>,
    networks: Vec<IpNet>,
    /// Every globally routable address is allowed too.
    public: bool,
    /// Plain http is refused.
    https_only: bool,
}

/// An entry of the list that is neither an origin nor a network.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is neither an origin (http://host:port) nor a network (10.0.0.0/8, 127.0.0.1)")]
pub struct PolicyParseError(String);

impl FromStr for EgressPolicy {
    type Err = PolicyParseError;

    /// Comma-separated origins and networks; empty allows nothing.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut policy = EgressPolicy::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let refuse = || PolicyParseError(entry.to_owned());
            if entry.contains("://") {
                let url = Url::parse(entry).map_err(|_| refuse())?;
                let origin = origin_of(&url).ok_or_else(refuse)?;
                let bare = url.path() == "/" && url.query().is_none() && url.username().is_empty();
                if !bare {
                    return Err(refuse());
                }
                policy.origins.push(origin);
            } else if let Ok(network) = entry.parse::<IpNet>() {
                policy.networks.push(network.trunc());
            } else {
                let address: IpAddr = entry.parse().map_err(|_| refuse())?;
                policy.networks.push(IpNet::from(address.to_canonical()));
            }
        }
        Ok(policy)
    }
}

impl fmt::Display for EgressPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origins = self
            .origins
            .iter()
            .map(|o| format!("{}://{}:{}", o.scheme, o.host, o.port));
        let networks = self.networks.iter().map(IpNet::to_string);
        let entries: Vec<String> = origins.chain(networks).collect();
        f.write_str(&entries.join(","))
    }
}

fn origin_of(url: &Url) -> Option<Origin> {
    let scheme = url.scheme();
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    Some(Origin {
        scheme: scheme.to_owned(),
        host: url.host_str()?.to_ascii_lowercase(),
        port: url.port_or_known_default()?,
    })
}

impl EgressPolicy {
    /// Loopback only: the development default.
    pub fn loopback() -> Self {
        "127.0.0.0/8,::1".parse().expect("loopback networks parse")
    }

    /// The public internet, plus whatever `also` allows (the tests'
    /// loopback receivers, a deployment's internal endpoints).
    pub fn public_internet(also: EgressPolicy) -> Self {
        Self {
            public: true,
            ..also
        }
    }

    /// The same policy refusing plain http.
    pub fn https_only(self) -> Self {
        Self {
            https_only: true,
            ..self
        }
    }

    pub fn is_empty(&self) -> bool {
        self.origins.is_empty() && self.networks.is_empty() && !self.public
    }

    /// Whether `address` lies in an allowed network, or is public when
    /// public addresses are allowed.
    pub fn allows_address(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.networks
            .iter()
            .any(|network| network.contains(&address))
            || (self.public && is_public(address))
    }

    fn allows_name(&self, name: &str) -> bool {
        self.origins.iter().any(|origin| origin.host == name)
    }

    /// `text` as a URL this policy lets a service call. A host name that
    /// is not an allowed origin passes here when networks are allowed;
    /// its address is checked when connecting.
    pub fn check(&self, text: &str) -> Result<Url, EgressError> {
        let url = Url::parse(text).map_err(|_| EgressError::NotAUrl)?;
        let origin = origin_of(&url).ok_or(EgressError::Scheme)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EgressError::Userinfo);
        }
        if self.https_only && origin.scheme != "https" {
            return Err(EgressError::HttpsRequired);
        }
        if self.origins.contains(&origin) {
            return Ok(url);
        }
        // An allowed origin's host on another port or scheme: its name is
        // trusted whatever it resolves to, so networks cannot vouch for it.
        let other_origin_of_a_trusted_name = self.allows_name(&origin.host);
        let allowed = !other_origin_of_a_trusted_name
            && match url.host() {
                Some(url::Host::Ipv4(address)) => self.allows_address(address.into()),
                Some(url::Host::Ipv6(address)) => self.allows_address(address.into()),
                _ => self.public || !self.networks.is_empty(),
            };
        if allowed {
            Ok(url)
        } else {
            Err(EgressError::NotAllowed(format!(
                "{}://{}:{}",
                origin.scheme, origin.host, origin.port
            )))
        }
    }

    /// An HTTP client for URLs [`check`](Self::check) passed: names are
    /// resolved through this policy, and neither a redirect nor a proxy
    /// can take a call off the allow-list ([`crate::http::client_builder`]).
    pub fn client(self: &Arc<Self>, timeout: Duration) -> reqwest::Result<reqwest::Client> {
        crate::http::client_builder(timeout)
            .dns_resolver(PolicyResolver(self.clone()))
            .build()
    }
}

/// Special-purpose IPv4 networks (RFC 6890 and its successors): nothing a
/// webhook may reach unless allowed by name.
const SPECIAL_V4: [&str; 16] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
];

/// Special-purpose networks inside IPv6's global unicast range 2000::/3,
/// including the forms that embed an IPv4 address (NAT64, Teredo, 6to4),
/// which could reach a private IPv4 network.
const SPECIAL_V6: [&str; 6] = [
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "3fff::/20",
];

/// Whether `address` (canonical: IPv4-mapped IPv6 is IPv4) is globally
/// routable.
fn is_public(address: IpAddr) -> bool {
    let inside = |networks: &[&str]| {
        networks.iter().any(|network| {
            network
                .parse::<IpNet>()
                .expect("constant networks parse")
                .contains(&address)
        })
    };
    match address {
        IpAddr::V4(_) => !inside(&SPECIAL_V4),
        IpAddr::V6(v6) => {
            let global_unicast = (v6.segments()[0] & 0xe000) == 0x2000;
            global_unicast && !inside(&SPECIAL_V6)
        }
    }
}

/// Resolves names, keeping only the addresses the policy allows (every
/// address of an allowed origin's host).
struct PolicyResolver(Arc<EgressPolicy>);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        let name = name.as_str().to_ascii_lowercase();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let trusted_name = policy.allows_name(&name);
            let allowed: Vec<SocketAddr> = resolved
                .filter(|address| trusted_name || policy.allows_address(address.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(EgressError::NotAllowed(name).into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> EgressPolicy {
        text.parse().unwrap()
    }

    #[test]
    fn origins_allow_their_scheme_host_and_port_only() {
        let policy = policy("http://public-web:3010");
        assert!(policy.check("http://public-web:3010/dispatch").is_ok());
        assert!(policy.check("http://PUBLIC-WEB:3010/dispatch").is_ok());
        for refused in [
            "http://public-web:3011/dispatch",
            "https://public-web:3010/dispatch",
            "http://public-web/dispatch",
            "http://evil.example:3010/dispatch",
            "http://10.0.0.1:3010/dispatch",
        ] {
            assert!(
                matches!(policy.check(refused), Err(EgressError::NotAllowed(_))),
                "{refused}"
            );
        }
    }

    #[test]
    fn networks_allow_addresses_inside_them() {
        let policy = policy("10.1.0.0/16, 127.0.0.1, fd00::/8");
        assert!(policy.check("http://10.1.200.3:80/x").is_ok());
        assert!(policy.check("http://127.0.0.1:3000/dispatch").is_ok());
        assert!(policy.check("http://[fd00::1]:3000/").is_ok());
        assert!(policy.allows_address("::ffff:10.1.2.3".parse().unwrap()));
        for refused in [
            "http://10.2.0.1/",
            "http://127.0.0.2:3000/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:3000/",
            "http://0.0.0.0:3000/",
        ] {
            assert!(
                matches!(policy.check(refused), Err(EgressError::NotAllowed(_))),
                "{refused}"
            );
        }
    }

    #[test]
    fn an_allowed_name_on_another_port_is_not_let_through_by_networks() {
        let policy = policy("http://public-web:3010, 10.0.0.0/8");
        assert!(policy.check("http://public-web:3010/dispatch").is_ok());
        assert!(matches!(
            policy.check("http://public-web:22/"),
            Err(EgressError::NotAllowed(_))
        ));
        assert!(policy.check("http://other.internal:22/").is_ok());
    }

    #[test]
    fn a_name_waits_for_its_address_when_networks_are_allowed() {
        assert!(
            policy("10.0.0.0/8")
                .check("http://anything.internal/")
                .is_ok()
        );
        assert!(policy("http://a:1").check("http://b:1/").is_err());
        assert!(EgressPolicy::default().check("http://a/").is_err());
    }

    #[test]
    fn schemes_and_credentials_are_refused_before_the_list() {
        let policy = EgressPolicy::loopback();
        assert_eq!(policy.check("ftp://127.0.0.1/"), Err(EgressError::Scheme));
        assert_eq!(
            policy.check("http://user:pw@127.0.0.1/"),
            Err(EgressError::Userinfo)
        );
        assert_eq!(
            policy.check("http://user@127.0.0.1/"),
            Err(EgressError::Userinfo)
        );
        assert_eq!(policy.check("not a url"), Err(EgressError::NotAUrl));
    }

    #[test]
    fn entries_that_are_neither_are_refused_by_name() {
        for bad in [
            "public-web:3010",
            "http://a:1/path",
            "http://u@a:1",
            "10.0.0.0/33",
        ] {
            let error = bad.parse::<EgressPolicy>().unwrap_err().to_string();
            assert!(error.contains(bad), "{error}");
        }
        assert!(policy("").is_empty());
        assert_eq!(
            policy("http://a:1, 10.0.0.0/8").to_string(),
            "http://a:1,10.0.0.0/8"
        );
    }

    #[test]
    fn the_public_internet_excludes_special_addresses() {
        let public = EgressPolicy::public_internet(EgressPolicy::default());
        for allowed in [
            "http://93.184.215.14/hook",
            "https://8.8.8.8:8443/hook",
            "http://[2606:4700::1111]/hook",
            "https://hooks.example.com/x",
        ] {
            assert!(public.check(allowed).is_ok(), "{allowed}");
        }
        for refused in [
            "http://127.0.0.1:4000/",
            "http://10.1.2.3/",
            "http://172.20.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://198.18.0.1/",
            "http://[::1]/",
            "http://[::]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[ff02::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::a00:1]/",
            "http://[2002:a00:1::]/",
            "http://[2001:db8::1]/",
        ] {
            assert!(
                matches!(public.check(refused), Err(EgressError::NotAllowed(_))),
                "{refused}"
            );
        }
        let with_loopback = EgressPolicy::public_internet(policy("127.0.0.0/8"));
        assert!(with_loopback.check("http://127.0.0.1:4000/").is_ok());
        assert!(with_loopback.check("http://10.0.0.1/").is_err());
    }

    #[test]
    fn https_only_refuses_plain_http() {
        let policy = EgressPolicy::public_internet(EgressPolicy::default()).https_only();
        assert_eq!(
            policy.check("http://8.8.8.8/"),
            Err(EgressError::HttpsRequired)
        );
        assert!(policy.check("https://8.8.8.8/").is_ok());
    }

    #[tokio::test]
    async fn a_public_policy_resolves_no_name_to_a_private_address() {
        let public = PolicyResolver(Arc::new(EgressPolicy::public_internet(
            EgressPolicy::default(),
        )));
        assert!(public.resolve("localhost".parse().unwrap()).await.is_err());
    }

    #[tokio::test]
    async fn names_resolve_only_to_allowed_addresses() {
        let resolver = PolicyResolver(Arc::new(policy("127.0.0.0/8")));
        let addresses: Vec<SocketAddr> = resolver
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addresses.is_empty());
        assert!(
            addresses
                .iter()
                .all(|a| a.ip().is_loopback() && a.is_ipv4())
        );
        let refused = PolicyResolver(Arc::new(policy("10.0.0.0/8")));
        assert!(refused.resolve("localhost".parse().unwrap()).await.is_err());
    }
}
