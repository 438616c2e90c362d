//! An outgoing HTTP proxy in the environment (`HTTPS_PROXY`, `ALL_PROXY`): the FCM client
//! leaves its own HTTP client aside, and the token request and the push both go through
//! the proxy (ureq's CONNECT). A test binary of its own: the environment is the
//! process's, and no other test may see the variable.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::fcm::{ok, server, FCM_PATH};
use common::keys;
use p2::push::fcm::{FcmClient, FcmSettings};
use p2::push::google_auth::ServiceAccount;
use p2::push::{Outcome, PushMessage};

/// A CONNECT proxy on 127.0.0.1: records each tunnel's target, then copies bytes both
/// ways until either side closes.
fn connect_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let targets = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&targets);
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let seen = Arc::clone(&seen);
            thread::spawn(move || {
                let _ = tunnel(client, &seen);
            });
        }
    });
    (url, targets)
}

fn tunnel(mut client: TcpStream, seen: &Mutex<Vec<String>>) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let line = head.lines().next().unwrap_or_default().to_owned();
    seen.lock().unwrap().push(line.clone());
    let mut parts = line.split(' ');
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    let upstream = TcpStream::connect(target)?;
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    client.set_read_timeout(None)?;
    let (mut c_read, mut u_write) = (client.try_clone()?, upstream.try_clone()?);
    let up = thread::spawn(move || {
        let _ = io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let _ = io::copy(&mut u_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

#[test]
fn with_a_proxy_in_the_environment_token_and_push_go_through_it() {
    let fcm = server(|_| ok());
    let (proxy, targets) = connect_proxy();
    // The only test of this binary: nothing else reads the environment meanwhile.
    std::env::set_var("HTTPS_PROXY", &proxy);
    std::env::set_var("ALL_PROXY", &proxy);

    let dir = common::scratch::Scratch::new("proxy");
    let path = keys::write_service_account(&dir, &format!("{}/token", fcm.url()));
    let client = FcmClient::new(
        FcmSettings {
            base_url: fcm.url(),
            deadline: Duration::from_secs(10),
            ..FcmSettings::default()
        },
        ServiceAccount::from_file(&path).unwrap(),
    )
    .unwrap();
    assert!(
        !client.uses_own_http(),
        "a proxy is set: pushes go through ureq"
    );
    let message = PushMessage {
        token: "proxy-test-token".to_owned(),
        device: "2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f".to_owned(),
        channel: String::new(),
        has_body: false,
    };
    assert_eq!(client.send(&message), Outcome::Delivered);

    // The stand-in saw the token request and the push, both through the proxy's tunnel.
    assert_eq!(fcm.requests_to("/token").len(), 1);
    assert_eq!(fcm.requests_to(FCM_PATH).len(), 1);
    let authority = fcm.url().trim_start_matches("http://").to_owned();
    let targets = targets.lock().unwrap().clone();
    assert!(!targets.is_empty(), "nothing went through the proxy");
    assert!(
        targets
            .iter()
            .all(|t| t.starts_with(&format!("CONNECT {authority} HTTP/1."))),
        "{targets:?}"
    );
}
