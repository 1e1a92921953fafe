//! Files in SeaweedFS through the api.

use serde_json::Value;

use super::bearer;
use crate::helpers::{api_stack, multipart};

#[test]
fn files_round_trip_20mb_with_ranges_and_503_without_seaweedfs() {
    use sha2::Digest;
    let api = api_stack();
    let a = bearer(&api.admin());
    // 20 MB of varied bytes.
    let data: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let sha = hex::encode(sha2::Sha256::digest(&data));
    let (ct, body) = multipart(&[
        ("file", Some(("big data.bin", "application/x-test")), &data),
        ("target", None, b"dev-9"),
    ]);
    let (status, _, raw) = crate::helpers::http(
        api.port,
        "POST",
        "/api/v1/files",
        &[("Authorization", &a), ("Content-Type", &ct)],
        &body,
    );
    let info: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    assert_eq!(status, 201, "{info} {}", String::from_utf8_lossy(&raw));
    assert_eq!(
        (info["size"].as_u64(), info["sha256"].as_str()),
        (Some(data.len() as u64), Some(sha.as_str()))
    );
    assert_eq!(info["target"], "dev-9");
    let id = info["id"].as_str().unwrap().to_string();
    // Download: same bytes, content type, disposition.
    let (status, head, got) = crate::helpers::http(
        api.port,
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &a)],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(hex::encode(sha2::Sha256::digest(&got)), sha);
    let h = head.to_ascii_lowercase();
    assert!(
        h.contains("content-type: application/x-test")
            && h.contains("accept-ranges: bytes")
            && h.contains("filename=\"big data.bin\""),
        "{head}"
    );
    // Ranges.
    let (status, head, part) = crate::helpers::http(
        api.port,
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &a), ("Range", "bytes=1000-1999")],
        b"",
    );
    assert_eq!(status, 206);
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-range: bytes 1000-1999/{}", data.len())),
        "{head}"
    );
    assert_eq!(part, data[1000..2000]);
    let (status, _, tail) = crate::helpers::http(
        api.port,
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &a), ("Range", "bytes=-10")],
        b"",
    );
    assert_eq!((status, tail.as_slice()), (206, &data[data.len() - 10..]));
    let (status, head, _) = crate::helpers::http(
        api.port,
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &a), ("Range", "bytes=999999999-")],
        b"",
    );
    assert_eq!(status, 416, "{head}");
    // Listed; metadata; a file of a category needs that category's access.
    let (_, _, list) = api.call(
        "GET",
        "/api/v1/files?target=dev-9",
        &[("Authorization", &a)],
        None,
    );
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == id.as_str())
    );
    assert_eq!(
        api.call(
            "GET",
            &format!("/api/v1/files/{id}/info"),
            &[("Authorization", &a)],
            None
        )
        .2["sha256"],
        sha.as_str()
    );
    assert_eq!(
        api.call("POST", "/api/v1/files", &[("Authorization", &a)], None)
            .0,
        415,
        "not multipart"
    );
    // Above api.max_upload_bytes (30 MB here): 413 from the Content-Length, nothing stored.
    let before = api
        .call("GET", "/api/v1/files", &[("Authorization", &a)], None)
        .2
        .as_array()
        .unwrap()
        .len();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", api.port)).unwrap();
    use std::io::{Read, Write};
    write!(s, "POST /api/v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nContent-Type: {ct}\r\nContent-Length: 40000000\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("max_upload_bytes"));
    assert_eq!(
        api.call("GET", "/api/v1/files", &[("Authorization", &a)], None)
            .2
            .as_array()
            .unwrap()
            .len(),
        before
    );
    // SeaweedFS down: file routes 503 with a clear message; the rest of the API works.
    let sup = crate::helpers::Sup::attach(&api.home);
    sup.cli_ok(&["stop", "seaweedfs"]);
    let (status, _, err) = api.call("GET", "/api/v1/files", &[("Authorization", &a)], None);
    assert_eq!(status, 200, "listing is metadata only: {err}");
    let (status, _, _) = crate::helpers::http(
        api.port,
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &a)],
        b"",
    );
    assert_eq!(status, 503);
    let (ct, body) = multipart(&[("file", Some(("small.txt", "text/plain")), b"hello")]);
    let (status, _, raw) = crate::helpers::http(
        api.port,
        "POST",
        "/api/v1/files",
        &[("Authorization", &a), ("Content-Type", &ct)],
        &body,
    );
    let err: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(status, 503, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("SeaweedFS"),
        "{err}"
    );
    assert_eq!(
        api.call("GET", "/api/v1/categories", &[("Authorization", &a)], None)
            .0,
        200
    );
    let (status, _, ready) = api.call("GET", "/readyz", &[], None);
    assert_eq!(
        (
            status,
            ready["postgresql"].as_bool(),
            ready["seaweedfs"].as_bool()
        ),
        (503, Some(true), Some(false)),
        "{ready}"
    );
    sup.cli_ok(&["start", "seaweedfs"]);
    // Back: download works again; delete removes bytes and metadata.
    // SeaweedFS reports ready when its S3 port answers; reads may fail (503) for a
    // moment longer while the volume server registers again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let got = loop {
        let (status, _, got) = crate::helpers::http(
            api.port,
            "GET",
            &format!("/api/v1/files/{id}"),
            &[("Authorization", &a)],
            b"",
        );
        if status == 200 || std::time::Instant::now() > deadline {
            assert_eq!(status, 200);
            break got;
        }
        assert_eq!(status, 503, "only 503 while SeaweedFS settles");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(hex::encode(sha2::Sha256::digest(&got)), sha);
    assert_eq!(
        api.call(
            "DELETE",
            &format!("/api/v1/files/{id}"),
            &[("Authorization", &a)],
            None
        )
        .0,
        204
    );
    assert_eq!(
        api.call(
            "GET",
            &format!("/api/v1/files/{id}/info"),
            &[("Authorization", &a)],
            None
        )
        .0,
        404
    );
}
