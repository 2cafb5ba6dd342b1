//! The closed-loop load: N connections, each sending one request, waiting for its answer
//! and sending the next (REST: HTTP/1.1 keep-alive with TF Serving's JSON; gRPC: the
//! official protos, `tensor_content` as TensorFlow's Python client sends numpy arrays, one
//! HTTP/2 connection each). After a warm-up, latencies go into an HdrHistogram.

use hdrhistogram::Histogram;
use std::time::{Duration, Instant};
use tfgate_e2e::{float_tensor, predict_request};
use tfgate_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use tfgate_proto::tensorflow::serving::PredictRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    Rest,
    Grpc,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rest => "REST",
            Protocol::Grpc => "gRPC",
        }
    }
}

/// What each request carries: `rows` rows of `width` floats for input `input`.
#[derive(Clone)]
pub struct Payload {
    pub model: String,
    pub input: String,
    pub rows: usize,
    pub width: usize,
}

impl Payload {
    fn values(&self) -> Vec<f32> {
        (0..self.rows * self.width)
            .map(|i| (i % 7) as f32 * 0.25)
            .collect()
    }

    /// Bytes of float32 input per request.
    pub fn input_bytes(&self) -> usize {
        self.rows * self.width * 4
    }

    /// The REST predict body, TF Serving's row format.
    fn rest_body(&self) -> String {
        let values = self.values();
        let rows: Vec<String> = values
            .chunks(self.width.max(1))
            .map(|r| {
                let v: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
                format!("[{}]", v.join(","))
            })
            .collect();
        format!(r#"{{"instances": [{}]}}"#, rows.join(","))
    }

    fn grpc_request(&self) -> PredictRequest {
        let mut tensor = float_tensor(&[self.rows as i64, self.width as i64], &[]);
        tensor.tensor_content = self.values().iter().flat_map(|v| v.to_le_bytes()).collect();
        predict_request(&self.model, &self.input, tensor)
    }
}

/// Where the load goes.
#[derive(Clone)]
pub struct Target {
    pub protocol: Protocol,
    pub port: u16,
}

/// What one load run measured.
pub struct Measured {
    /// Latencies of the measured requests, µs.
    pub hist: Histogram<u64>,
    /// Requests answered per second over the measured window.
    pub rps: f64,
    /// Requests sent in all (warm-up included), for per-request CPU.
    pub total: u64,
    /// Requests that failed (the first error is printed).
    pub failed: u64,
}

/// One keep-alive HTTP/1.1 connection: send, read the whole response, repeat.
struct RestConn {
    stream: tokio::net::TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl RestConn {
    async fn connect(port: u16, path: &str, body: &str) -> std::io::Result<RestConn> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        Ok(RestConn {
            stream,
            request,
            buf: Vec::with_capacity(1 << 16),
        })
    }

    /// Reads what the server sent next onto `buf`; an error at EOF.
    async fn read_more(&mut self, chunk: &mut [u8]) -> Result<(), String> {
        let n = self.stream.read(chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// One request; an error names what went wrong.
    async fn call(&mut self) -> Result<(), String> {
        self.stream
            .write_all(&self.request)
            .await
            .map_err(|e| e.to_string())?;
        self.buf.clear();
        let mut chunk = vec![0u8; 1 << 16];
        let header_end = loop {
            self.read_more(&mut chunk).await?;
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..header_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("no content-length")?;
        while self.buf.len() < header_end + len {
            self.read_more(&mut chunk).await?;
        }
        if !head.starts_with("http/1.1 200") {
            let body = String::from_utf8_lossy(&self.buf[header_end..]);
            return Err(format!("{} {body}", head.lines().next().unwrap_or("")));
        }
        Ok(())
    }
}

/// Runs `clients` closed loops for `warmup` then `seconds`.
pub async fn run(
    target: &Target,
    payload: &Payload,
    clients: usize,
    warmup: Duration,
    seconds: Duration,
) -> Measured {
    let warm_until = Instant::now() + warmup;
    let stop_at = warm_until + seconds;
    let body = payload.rest_body();
    let path = format!("/v1/models/{}:predict", payload.model);
    let req = payload.grpc_request();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (body, path, req, target) = (body.clone(), path.clone(), req.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("a 3-digit histogram is valid");
            let (mut total, mut failed) = (0u64, 0u64);
            let mut first_error = None;
            let mut record = |t: Instant, result: Result<(), String>| {
                total += 1;
                match result {
                    Ok(()) if t >= warm_until => {
                        let _ = hist.record(t.elapsed().as_micros() as u64);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e);
                    }
                }
            };
            match target.protocol {
                Protocol::Rest => match RestConn::connect(target.port, &path, &body).await {
                    Ok(mut conn) => {
                        while Instant::now() < stop_at {
                            let t = Instant::now();
                            let r = conn.call().await;
                            let broken = r.is_err();
                            record(t, r);
                            if broken {
                                break;
                            }
                        }
                    }
                    Err(e) => record(Instant::now(), Err(format!("connect: {e}"))),
                },
                Protocol::Grpc => {
                    let url = format!("http://127.0.0.1:{}", target.port);
                    match PredictionServiceClient::connect(url).await {
                        Ok(client) => {
                            let mut client = client
                                .max_decoding_message_size(usize::MAX)
                                .max_encoding_message_size(usize::MAX);
                            while Instant::now() < stop_at {
                                let t = Instant::now();
                                let r = client
                                    .predict(req.clone())
                                    .await
                                    .map(|_| ())
                                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
                                record(t, r);
                            }
                        }
                        Err(e) => record(Instant::now(), Err(format!("connect: {e}"))),
                    }
                }
            }
            (hist, total, failed, first_error)
        }));
    }
    gather(tasks, seconds).await
}

/// What one client task of a closed loop gives back: its latencies, its requests in
/// all, how many failed, and the first error.
pub type ClientResult = (Histogram<u64>, u64, u64, Option<String>);

/// The clients' results as one measurement over `seconds` (the first error of each is
/// printed).
pub async fn gather(
    tasks: Vec<tokio::task::JoinHandle<ClientResult>>,
    seconds: Duration,
) -> Measured {
    let mut all = Histogram::<u64>::new(3).expect("a 3-digit histogram is valid");
    let (mut total, mut failed) = (0, 0);
    for t in tasks {
        if let Ok((h, n, f, e)) = t.await {
            let _ = all.add(h);
            total += n;
            failed += f;
            if let Some(e) = e {
                eprintln!("request failed: {e}");
            }
        }
    }
    let rps = all.len() as f64 / seconds.as_secs_f64();
    Measured {
        hist: all,
        rps,
        total,
        failed,
    }
}
