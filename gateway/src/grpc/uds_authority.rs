//! gRPC C-core clients (grpc-python since 1.57, so TF Serving's own tests) and grpc-java
//! send a Unix socket's path, percent-encoded, as the HTTP/2 `:authority`
//! (`tmp%2Ftfgate.sock`). TF Serving's gRPC server ignores it; tonic's HTTP/2 layer (h2)
//! rejects it as a malformed authority and resets the stream (hyperium/h2#487, declined
//! upstream). So a plaintext Unix-socket connection passes through this shim: the
//! client's header blocks are decoded (HPACK), an `:authority` that is not a valid URI
//! authority becomes `localhost` (what grpc-go sends there), and each block is
//! re-encoded for the server. Every other frame, and all the server sends, passes
//! through unchanged. TCP connections never come here.

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Every HTTP/2 peer accepts frames this large (SETTINGS_MAX_FRAME_SIZE's floor).
const MAX_FRAME: usize = 16_384;
/// A header block larger than this closes the connection (h2's own default limit on a
/// decoded header list is 16 MiB; gRPC clients send a few hundred bytes).
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Buffer between the shim and the HTTP/2 server.
const PIPE_BYTES: usize = 256 << 10;

/// The stream the gRPC server reads in place of `client`.
pub fn shim<S>(client: S) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (server_side, ours) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(async move {
        let (client_read, mut client_write) = tokio::io::split(client);
        let (server_read, mut server_write) = tokio::io::split(ours);
        let up = async {
            if let Err(e) = forward(BufReader::new(client_read), &mut server_write).await {
                tracing::debug!("gRPC Unix-socket connection closed: {e}");
            }
            let _ = server_write.shutdown().await;
        };
        let down = async {
            let mut server_read = server_read;
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
        };
        // The server's side closing ends the forwarding too: a client that sends nothing
        // more must not keep its socket open here once the server has let it go.
        tokio::pin!(up, down);
        tokio::select! {
            _ = &mut up => down.await,
            _ = &mut down => {}
        }
    });
    server_side
}

/// Client → server: the preface, then frame by frame, header blocks rewritten.
async fn forward<R, W>(mut from: R, to: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2: the server answers it as it would.
        tokio::io::copy(&mut from, to).await?;
        return Ok(());
    }
    let mut rewriter = Rewriter::default();
    let mut block = Vec::new();
    // The HEADERS frame whose block is being gathered: its stream, flags, priority.
    let mut open: Option<(u32, u8, Option<[u8; 5]>)> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        match (kind, open) {
            (HEADERS, None) => {
                let (fragment, priority) = headers_fragment(&payload, flags)?;
                block.extend_from_slice(fragment);
                open = Some((stream, flags, priority));
            }
            (CONTINUATION, Some((s, _, _))) if s == stream => block.extend_from_slice(&payload),
            // Anything else inside a header block is the client's protocol error; the
            // server sees it as sent.
            (_, Some(_)) | (CONTINUATION, None) => {
                return Err(invalid("frame interleaved with a header block"));
            }
            _ => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
                continue;
            }
        }
        if block.len() > MAX_HEADER_BLOCK {
            return Err(invalid("header block too large"));
        }
        if let (true, Some((stream, flags, priority))) = (flags & END_HEADERS != 0, open) {
            let rewritten = rewriter.rewrite(&block)?;
            write_headers(to, stream, flags & END_STREAM, priority, &rewritten).await?;
            block.clear();
            open = None;
        }
    }
}

/// A HEADERS payload's header block fragment (padding and priority taken off).
fn headers_fragment(payload: &[u8], flags: u8) -> std::io::Result<(&[u8], Option<[u8; 5]>)> {
    let mut body = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, rest) = body.split_first().ok_or_else(|| invalid("short frame"))?;
        pad = n as usize;
        body = rest;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let p: [u8; 5] = body
            .get(..5)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| invalid("short frame"))?;
        priority = Some(p);
        body = &body[5..];
    }
    let end = body
        .len()
        .checked_sub(pad)
        .ok_or_else(|| invalid("padding longer than the frame"))?;
    Ok((&body[..end], priority))
}

/// A HEADERS frame (and CONTINUATIONs) carrying `block`.
async fn write_headers<W: AsyncWrite + Unpin>(
    to: &mut W,
    stream: u32,
    end_stream: u8,
    priority: Option<[u8; 5]>,
    block: &[u8],
) -> std::io::Result<()> {
    let room = MAX_FRAME - if priority.is_some() { 5 } else { 0 };
    let first_len = block.len().min(room);
    let (first, mut rest) = block.split_at(first_len);
    let mut flags = end_stream | if priority.is_some() { PRIORITY } else { 0 };
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    let prefix = priority.as_ref().map(|p| &p[..]).unwrap_or(&[]);
    write_frame(to, HEADERS, flags, stream, &[prefix, first]).await?;
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        write_frame(to, CONTINUATION, flags, stream, &[chunk]).await?;
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    to: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    parts: &[&[u8]],
) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = (len as u32).to_be_bytes();
    let id = stream.to_be_bytes();
    let head = [
        len[1], len[2], len[3], kind, flags, id[0], id[1], id[2], id[3],
    ];
    to.write_all(&head).await?;
    for part in parts {
        to.write_all(part).await?;
    }
    Ok(())
}

fn invalid(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string())
}

/// One connection's HPACK state: the client's encoder mirrored, and our own toward the
/// server.
#[derive(Default)]
struct Rewriter {
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
}

impl Rewriter {
    fn rewrite(&mut self, block: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut headers = self
            .decoder
            .decode(block)
            .map_err(|e| invalid(&format!("HPACK: {e:?}")))?;
        for (name, value) in headers.iter_mut() {
            if name.as_slice() == b":authority"
                && hyper::http::uri::Authority::try_from(value.as_slice()).is_err()
            {
                *value = b"localhost".to_vec();
            }
        }
        Ok(self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/tensorflow.serving.PredictionService/Predict"),
            (":authority", authority),
            ("content-type", "application/grpc"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    #[test]
    fn only_an_invalid_authority_changes_across_blocks() {
        let mut client = Encoder::new();
        let mut server = Decoder::new();
        let mut shim = Rewriter::default();
        for authority in ["tmp%2Ftfgate.sock", "tmp%2Ftfgate.sock", "localhost:8500"] {
            let sent = request(authority);
            let block = client.encode(sent.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
            let seen = server.decode(&shim.rewrite(&block).unwrap()).unwrap();
            let expected = if authority.contains('%') {
                request("localhost")
            } else {
                sent
            };
            assert_eq!(seen, expected);
        }
    }

    #[tokio::test]
    async fn frames_pass_and_split_header_blocks_are_joined() {
        let mut client = Encoder::new();
        let block = client.encode(
            request("tmp%2Fx.sock")
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice())),
        );
        let (a, b) = block.split_at(10);
        let mut wire = PREFACE.to_vec();
        let frame = |kind: u8, flags: u8, payload: &[u8]| {
            let len = (payload.len() as u32).to_be_bytes();
            let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
            f.extend_from_slice(payload);
            f
        };
        wire.extend(frame(0x4, 0, &[])); // SETTINGS
        wire.extend(frame(HEADERS, PADDED, &[&[2u8][..], a, &[0, 0]].concat()));
        wire.extend(frame(CONTINUATION, END_HEADERS, b));
        wire.extend(frame(0x0, END_STREAM, b"data"));
        let mut out = Vec::new();
        forward(&wire[..], &mut out).await.unwrap();

        assert_eq!(&out[..24], PREFACE);
        assert_eq!(&out[24..33], &frame(0x4, 0, &[])[..]);
        let headers = &out[33..];
        let len = u32::from_be_bytes([0, headers[0], headers[1], headers[2]]) as usize;
        assert_eq!((headers[3], headers[4]), (HEADERS, END_HEADERS));
        let seen = Decoder::new().decode(&headers[9..9 + len]).unwrap();
        assert_eq!(seen, request("localhost"));
        assert_eq!(&headers[9 + len..], &frame(0x0, END_STREAM, b"data")[..]);
    }
}
