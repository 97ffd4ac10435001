//! Free ports for what the tests start later: services as processes,
//! private brokers, proxies.

/// A free TCP port for a process to listen on later (on every address, as
/// the services bind), chosen below the kernel's ephemeral range: there any
/// outgoing connection may take the port before the process binds it (it
/// happens on a machine busy with connections); below it, only explicit
/// binds compete.
pub fn free_port() -> u16 {
    const LOWEST: u16 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .filter(|&low: &u16| low > LOWEST + 1_000)
        .unwrap_or(32_768);
    loop {
        let random = uuid::Uuid::new_v4().as_u128();
        let port = LOWEST + (random % u128::from(ephemeral - LOWEST)) as u16;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}
