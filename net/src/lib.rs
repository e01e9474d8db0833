//! The service network: how tasks find and reach services.
//!
//! - [`addresses`]: the cluster's range of service addresses (virtual IPs), one per service at
//!   the offset the state machine gave it.
//! - [`endpoints`]: the endpoint table, derived from the applied state (and this node's task
//!   addresses) and nothing else: what the resolver and the proxy read.
//! - [`dns`]: the resolver the tasks of this node ask: `SERVICE` is the service's virtual
//!   address, `tasks.SERVICE` the addresses of its running tasks; other names go to the node's
//!   own resolvers.
//! - [`proxy`]: carries connections made to a service's address to one of its tasks, on this
//!   node or, over a mesh stream, on another.
//! - [`datagrams`]: the proxy's UDP side: sessions, the relays of service addresses' UDP
//!   ports.
//! - [`ingress`]: the routing mesh: a port published in ingress mode answers on every node.
//! - [`metrics`]: the proxy's figures (`shoal_proxy_*`).
//! - [`redirect`]: the packet filter rules that turn connections and datagrams to service
//!   addresses towards the proxy.

pub mod addresses;
pub mod datagrams;
pub mod dns;
pub mod endpoints;
pub mod ingress;
pub mod metrics;
pub mod proxy;
pub mod redirect;
#[cfg(test)]
mod testkit;

pub use addresses::{AddressRange, AddressRangeError};
pub use dns::{Resolver, ResolverConfig};
pub use endpoints::{Endpoint, EndpointTable, ServiceEndpoints};
pub use ingress::IngressConfig;
pub use metrics::ProxyMetrics;
pub use proxy::{LocalAddresses, Proxy, ProxyConfig};
pub use redirect::{Redirect, RedirectError};
