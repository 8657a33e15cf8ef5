//! `statgate healthcheck [PATH]`: one HTTP GET to the gateway's own listen address, exit 0 on
//! a 2xx answer. Container images and orchestrators probe the gateway with it, so the image
//! needs no curl or shell just for its `HEALTHCHECK`.
//!
//! Plain `std::net::TcpStream`, HTTP/1.1 with `Connection: close`, connect and read timeouts,
//! and only the status line is read (at most `MAX_STATUS_LINE` bytes): a hung or hostile
//! peer cannot keep the probe waiting or make it buffer without bound.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Connect, write and read deadline of one probe (each separately).
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The longest status line read; anything longer is not an HTTP answer from statgate.
const MAX_STATUS_LINE: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("the path must start with '/' and hold only visible ASCII characters, got {0:?}")]
    BadPath(String),
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("no answer from {address}: {source}")]
    Exchange {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("http://{address}{path} answered {status:?}")]
    NotOk {
        address: SocketAddr,
        path: String,
        status: String,
    },
}

/// The address to probe for a gateway bound to `listen`: a wildcard bind (`0.0.0.0`, `::`) is
/// reached on the loopback address of its family.
pub fn probe_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GETs `path` from the gateway bound to `listen`; `Ok` only on a 2xx status.
pub fn probe(listen: SocketAddr, path: &str, timeout: Duration) -> Result<(), HealthcheckError> {
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HealthcheckError::BadPath(path.to_owned()));
    }
    let address = probe_address(listen);
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|source| HealthcheckError::Connect { address, source })?;
    let status = exchange(&mut stream, &address, path, timeout)
        .map_err(|source| HealthcheckError::Exchange { address, source })?;
    if is_success(&status) {
        Ok(())
    } else {
        Err(HealthcheckError::NotOk {
            address,
            path: path.to_owned(),
            status,
        })
    }
}

/// Sends the request and returns the answer's status line, trimmed.
fn exchange(
    stream: &mut TcpStream,
    address: &SocketAddr,
    path: &str,
    timeout: Duration,
) -> io::Result<String> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: `write!` on the stream itself sends each formatted piece on its own, and a
    // server that answers after the first piece and closes resets the connection under its
    // unread rest, losing the answer (seen in CI).
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: statgate-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let mut line = Vec::new();
    BufReader::new(stream.take(MAX_STATUS_LINE)).read_until(b'\n', &mut line)?;
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
}

/// `HTTP/1.x 2xx …`.
fn is_success(status_line: &str) -> bool {
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    version.starts_with("HTTP/1.")
        && code.len() == 3
        && code.starts_with('2')
        && code.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server on a free loopback port that answers `reply` to one connection.
    fn answering(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            // The whole request head before the answer: closing with unread bytes resets.
            let mut reader = BufReader::new(&socket);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = (&socket).write_all(reply);
        });
        address
    }

    #[test]
    fn a_2xx_status_line_is_success_and_nothing_else_is() {
        assert!(is_success("HTTP/1.1 200 OK"));
        assert!(is_success("HTTP/1.0 204 No Content"));
        for line in [
            "HTTP/1.1 503 Service Unavailable",
            "HTTP/1.1 404 Not Found",
            "HTTP/1.1 2000 OK",
            "SSH-2.0-OpenSSH_9.2",
            "",
        ] {
            assert!(!is_success(line), "{line:?}");
        }
    }

    #[test]
    fn a_wildcard_bind_is_probed_on_loopback() {
        let probed = |listen: &str| probe_address(listen.parse().unwrap()).to_string();
        assert_eq!(probed("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(probed("[::]:8080"), "[::1]:8080");
        assert_eq!(probed("10.1.2.3:9000"), "10.1.2.3:9000");
    }

    #[test]
    fn probe_passes_on_200_and_fails_on_503() {
        let ok = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        probe(ok, "/healthz", TIMEOUT).unwrap();

        let unready = answering(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let err = probe(unready, "/readyz", TIMEOUT).unwrap_err();
        assert!(
            err.to_string().contains("/readyz answered \"HTTP/1.1 503"),
            "{err}"
        );
    }

    #[test]
    fn probe_fails_on_a_closed_port_a_silent_peer_and_a_bad_path() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            probe(closed, "/healthz", TIMEOUT),
            Err(HealthcheckError::Connect { .. })
        ));

        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let started = std::time::Instant::now();
        let err = probe(
            silent.local_addr().unwrap(),
            "/healthz",
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(err, HealthcheckError::Exchange { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));

        for path in ["healthz", "/a b", "/x\r\nHost: evil"] {
            assert!(matches!(
                probe(closed, path, TIMEOUT),
                Err(HealthcheckError::BadPath(_))
            ));
        }
    }
}
