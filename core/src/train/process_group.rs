//! Training across processes and machines (the `torchrun` equivalent): `world`
//! ranks, one device each, joined over TCP with rank 0 at the centre.
//!
//! Rank 0 listens on the coordinator address and every other rank connects to it.
//! Each exchange is a gather to rank 0 and a reply to all: every rank sends its
//! part, rank 0 combines the parts in rank order and sends every rank the same
//! result. An optimizer step is one exchange ([`ProcessGroup::exchange_step`]):
//! the dense gradients summed, the SignSGD puzzle rows and ids concatenated in rank
//! order, the metrics summed. Summing on the host in rank order is what one
//! process does with one micro-batch per rank (`GradientsAccumulator` adds them in
//! that order), so two processes reproduce one process to the bit.
//!
//! Faults end the run on every rank within a bounded time, with an error that
//! names the rank: a rank that dies closes its connection, which its peer sees at
//! once; rank 0 then tells the others which rank stopped. A rank that hangs is
//! caught by the read timeout. Nothing is retried: the last complete checkpoint
//! is what a run resumes from.
//!
//! Why not burn-collective's global mode (burn 0.21): its node-side barrier clears
//! a copy of its list of synced nodes, so the second `all_reduce` after a
//! `register` never returns; registering again for every all-reduce works for a
//! few bytes, but loses a peer (`PeerLost`) by the third round with gradients of
//! a few MB, and a 28 MB all-reduce took 0.8-1.5 s on localhost. It has no
//! timeouts, and a port that is taken goes unreported. See docs/distributed.md.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use burn::module::Param;
use burn::optim::GradientsParams;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::model::names::{visit_net, Layout, Role, WeightVisitor};
use crate::model::Net;
use crate::train::loss::Metrics;
use crate::{Error, Inner, Result, B};

/// Where a rank sits in the group and how to reach rank 0.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub rank: usize,
    pub world: usize,
    /// `host:port` of rank 0, which listens there (the others connect).
    pub coordinator: String,
    /// How long a rank waits for the others (to join, or in any exchange) before
    /// it stops with an error naming the rank it waited for.
    pub timeout: Duration,
}

/// One message on a link: its kind, then its length and bytes.
const DATA: u8 = 0;
/// The run is stopping; the bytes say why (UTF-8).
const ABORT: u8 = 1;

/// This process's membership in a group of ranks.
pub struct ProcessGroup {
    pub rank: usize,
    pub world: usize,
    coordinator: String,
    timeout: Duration,
    /// Rank 0: the link to rank r at index r - 1. Other ranks: the link to rank 0.
    links: Vec<TcpStream>,
}

fn net_error(what: String, e: std::io::Error) -> Error {
    Error::Other(format!("{what}: {e}"))
}

impl ProcessGroup {
    /// Joins the group. Rank 0 listens on the coordinator address and waits for
    /// every other rank; the others connect, retrying until the timeout. `hello`
    /// must be the same on every rank (it names the program's version): a rank
    /// that sends another one is refused.
    pub fn join(config: &GroupConfig, hello: &str) -> Result<ProcessGroup> {
        let GroupConfig {
            rank,
            world,
            ref coordinator,
            timeout,
        } = *config;
        if world < 2 || rank >= world {
            return Err(Error::Usage(format!(
                "--rank {rank} of --world {world}: the world needs 2 ranks or more, numbered 0..{}",
                world.saturating_sub(1)
            )));
        }
        let address = resolve(coordinator)?;
        let mut group = ProcessGroup {
            rank,
            world,
            coordinator: coordinator.clone(),
            timeout,
            links: Vec::new(),
        };
        if rank == 0 {
            group.accept(address, hello)?;
        } else {
            group.connect(address, hello)?;
        }
        Ok(group)
    }

    /// Rank 0: binds the coordinator port and takes every other rank's hello.
    fn accept(&mut self, address: SocketAddr, hello: &str) -> Result<()> {
        let listener = TcpListener::bind(address).map_err(|e| {
            let why = if e.kind() == ErrorKind::AddrInUse {
                "the port is taken (another run or program listens there; choose another with --coordinator)".to_string()
            } else {
                e.to_string()
            };
            Error::Other(format!("rank 0 cannot listen on {}: {why}", self.coordinator))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| net_error("coordinator".into(), e))?;
        let deadline = Instant::now() + self.timeout;
        let mut joined: Vec<Option<TcpStream>> = (1..self.world).map(|_| None).collect();
        while joined.iter().any(Option::is_none) {
            match listener.accept() {
                Ok((stream, from)) => {
                    stream
                        .set_nonblocking(false)
                        .map_err(|e| net_error(format!("connection from {from}"), e))?;
                    self.configure(&stream)?;
                    let bytes = read_message(&stream, &format!("a rank at {from}"))?;
                    let text = String::from_utf8_lossy(&bytes).to_string();
                    let (r, rest) = parse_hello(&text);
                    let refuse = match r {
                        None => Some(format!("rank 0 refuses {from}: not a recursa rank")),
                        Some(r) if r == 0 || r >= self.world => Some(format!(
                            "rank 0 refuses rank {r}: the world is {} ranks (0..{})",
                            self.world,
                            self.world - 1
                        )),
                        Some(r) if joined[r - 1].is_some() => Some(format!(
                            "rank 0 refuses a second rank {r} (from {from}): each rank joins once"
                        )),
                        Some(r) if rest != format!("{} {hello}", self.world) => Some(format!(
                            "rank 0 refuses rank {r}: it runs `{rest}`, rank 0 runs `{} {hello}` (world, version)",
                            self.world
                        )),
                        Some(_) => None,
                    };
                    if let Some(why) = refuse {
                        let _ = write_message(&stream, ABORT, why.as_bytes());
                        self.links = joined.into_iter().flatten().collect();
                        self.abort(&why);
                        return Err(Error::Other(why));
                    }
                    let r = r.expect("checked above");
                    joined[r - 1] = Some(stream);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing: Vec<String> = joined
                            .iter()
                            .enumerate()
                            .filter(|(_, s)| s.is_none())
                            .map(|(i, _)| (i + 1).to_string())
                            .collect();
                        let why = format!(
                            "rank(s) {} did not connect to the coordinator {} within {} s",
                            missing.join(", "),
                            self.coordinator,
                            self.timeout.as_secs()
                        );
                        self.links = joined.into_iter().flatten().collect();
                        self.abort(&why);
                        return Err(Error::Other(why));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(net_error(format!("coordinator {}", self.coordinator), e)),
            }
        }
        self.links = joined.into_iter().flatten().collect();
        Ok(())
    }

    /// Ranks 1..: connects to rank 0 (which may not listen yet) and says hello.
    fn connect(&mut self, address: SocketAddr, hello: &str) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let stream = loop {
            match TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(Error::Other(format!(
                        "rank {} cannot reach the coordinator (rank 0) at {} within {} s: {e}",
                        self.rank,
                        self.coordinator,
                        self.timeout.as_secs()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        self.configure(&stream)?;
        let hello = format!("rank {} {} {hello}", self.rank, self.world);
        write_message(&stream, DATA, hello.as_bytes())
            .map_err(|e| net_error(format!("rank {}: hello to rank 0", self.rank), e))?;
        self.links = vec![stream];
        Ok(())
    }

    fn configure(&self, stream: &TcpStream) -> Result<()> {
        let set = || -> std::io::Result<()> {
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(self.timeout))?;
            stream.set_write_timeout(Some(self.timeout))
        };
        set().map_err(|e| net_error("configuring a connection".into(), e))
    }

    /// Rank 0 of the group does the writing (metrics, checkpoints, run directory).
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    /// Every rank sends `mine`; rank 0 combines the parts (rank order, its own
    /// first) and every rank returns the same combined bytes.
    pub fn exchange(
        &self,
        mine: Vec<u8>,
        combine: impl FnOnce(Vec<Vec<u8>>) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        if self.rank != 0 {
            if let Err(e) = write_message(&self.links[0], DATA, &mine) {
                // Rank 0 may have said why before it closed the connection.
                return Err(match self.read_from_leader() {
                    Err(said) => said,
                    Ok(_) => self.lost_leader(e),
                });
            }
            return self.read_from_leader();
        }
        let mut parts = vec![mine];
        for r in 1..self.world {
            let what = format!("rank {r}");
            match read_message(&self.links[r - 1], &what) {
                Ok(bytes) => parts.push(bytes),
                Err(e) => {
                    let why = format!("{e}; every rank stops");
                    self.abort(&why);
                    return Err(Error::Other(why));
                }
            }
        }
        let reply = match combine(parts) {
            Ok(r) => r,
            Err(e) => {
                self.abort(&format!("rank 0: {e}"));
                return Err(e);
            }
        };
        for r in 1..self.world {
            if let Err(e) = write_message(&self.links[r - 1], DATA, &reply) {
                let why = format!("rank {r} stopped (sending to it: {e}); every rank stops");
                self.abort(&why);
                return Err(Error::Other(why));
            }
        }
        Ok(reply)
    }

    /// Rank 0 sends `bytes` to every rank; every rank returns them.
    pub fn broadcast(&self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        self.exchange(
            if self.rank == 0 { bytes } else { Vec::new() },
            |mut parts| Ok(parts.swap_remove(0)),
        )
    }

    fn read_from_leader(&self) -> Result<Vec<u8>> {
        let rank = self.rank;
        let coordinator = self.coordinator.clone();
        read_message(
            &self.links[0],
            &format!("rank 0 (the coordinator {coordinator})"),
        )
        .map_err(|e| Error::Other(format!("rank {rank}: {e}")))
    }

    fn lost_leader(&self, e: std::io::Error) -> Error {
        Error::Other(format!(
            "rank {}: rank 0 (the coordinator {}) stopped: {e}",
            self.rank, self.coordinator
        ))
    }

    /// Tells the other ranks the run stops and why (best effort: they may be gone).
    /// Rank 0 tells every rank; another rank tells rank 0, which tells the rest.
    pub fn abort(&self, why: &str) {
        abort_on(self.rank, &self.links, why);
    }

    /// A handle that can [`Self::abort`] the group after the group itself has moved
    /// (into a trainer): the caller stops the others when its run fails.
    pub fn aborter(&self) -> Aborter {
        Aborter {
            rank: self.rank,
            links: self
                .links
                .iter()
                .filter_map(|l| l.try_clone().ok())
                .collect(),
        }
    }

    /// One optimizer step's exchange: the dense gradients and the metrics summed
    /// over ranks, the puzzle rows and ids (`[n, d]`, `[n]` on every rank)
    /// concatenated in rank order. `net` gives the parameters' order.
    pub fn exchange_step(
        &self,
        net: &mut Net,
        metrics: &Metrics,
        grads: GradientsParams,
        puzzle: Option<(Tensor<B, 2>, Tensor<B, 1, Int>)>,
    ) -> Result<StepExchange> {
        let mut dense = Flatten {
            grads,
            values: Vec::new(),
        };
        visit_net(net, &mut dense);
        let (rows, ids, width, device) = match &puzzle {
            Some((rows, ids)) => (
                f32s(rows.clone()),
                ids.clone()
                    .into_data()
                    .convert::<i32>()
                    .to_vec::<i32>()
                    .expect("i32"),
                rows.dims()[1],
                Some(rows.device()),
            ),
            None => (Vec::new(), Vec::new(), 0, None),
        };
        let own_len = dense.values.len();
        let mine = StepPart {
            metrics: metrics.to_array(),
            dense: dense.values,
            rows,
            ids,
        }
        .to_bytes();
        let reply = self.exchange(mine, |parts| {
            let parts: Vec<StepPart> = parts
                .iter()
                .enumerate()
                .map(|(r, p)| StepPart::from_bytes(p).map_err(|e| Error::Other(format!("rank {r}: {e}"))))
                .collect::<Result<_>>()?;
            let mut sum = StepPart::default();
            for (r, p) in parts.into_iter().enumerate() {
                if r == 0 {
                    sum = p;
                    continue;
                }
                if p.dense.len() != sum.dense.len() || p.rows.len() != sum.rows.len() / r {
                    return Err(Error::Other(format!(
                        "rank {r} sent {} gradient values and {} puzzle values, rank 0 {} and {}: do the ranks train the same experiment?",
                        p.dense.len(),
                        p.rows.len(),
                        sum.dense.len(),
                        sum.rows.len() / r
                    )));
                }
                for (a, b) in sum.metrics.iter_mut().zip(&p.metrics) {
                    *a += b;
                }
                for (a, b) in sum.dense.iter_mut().zip(&p.dense) {
                    *a += b;
                }
                sum.rows.extend(p.rows);
                sum.ids.extend(p.ids);
            }
            Ok(sum.to_bytes())
        })?;
        let sum = StepPart::from_bytes(&reply)?;
        if sum.dense.len() != own_len {
            return Err(Error::Other(format!(
                "rank {}: the summed gradients have {} values, this rank's {own_len}",
                self.rank,
                sum.dense.len()
            )));
        }
        // Unflatten reads exactly `own_len` values, in the order Flatten wrote them.
        let mut restore = Unflatten {
            grads: dense.grads,
            values: &sum.dense,
            at: 0,
        };
        visit_net(net, &mut restore);
        let puzzle = device.map(|device| {
            let n = sum.ids.len();
            (
                Tensor::<B, 2>::from_data(TensorData::new(sum.rows, [n, width]), &device),
                Tensor::<B, 1, Int>::from_data(TensorData::new(sum.ids, [n]), &device),
            )
        });
        Ok(StepExchange {
            metrics: Metrics::from_array(sum.metrics),
            grads: restore.grads,
            puzzle,
        })
    }
}

/// [`ProcessGroup::abort`] on connections of its own.
pub struct Aborter {
    rank: usize,
    links: Vec<TcpStream>,
}

impl Aborter {
    /// Tells the other ranks the run stops and why.
    pub fn abort(&self, why: &str) {
        abort_on(self.rank, &self.links, why);
    }
}

fn abort_on(rank: usize, links: &[TcpStream], why: &str) {
    let why = if rank == 0 {
        why.to_string()
    } else {
        format!("rank {rank} stopped: {why}")
    };
    for link in links {
        let _ = write_message(link, ABORT, why.as_bytes());
    }
}

/// What [`ProcessGroup::exchange_step`] returns: the whole group's step.
pub struct StepExchange {
    pub metrics: Metrics,
    pub grads: GradientsParams,
    pub puzzle: Option<(Tensor<B, 2>, Tensor<B, 1, Int>)>,
}

/// One rank's part of a step, as sent.
#[derive(Default)]
struct StepPart {
    metrics: [f64; Metrics::FIELDS],
    dense: Vec<f32>,
    rows: Vec<f32>,
    ids: Vec<i32>,
}

impl StepPart {
    fn to_bytes(&self) -> Vec<u8> {
        let mut p = Pack::default();
        p.f64s(&self.metrics);
        p.f32s(&self.dense);
        p.f32s(&self.rows);
        p.i32s(&self.ids);
        p.0
    }

    fn from_bytes(bytes: &[u8]) -> Result<StepPart> {
        let mut u = Unpack::new(bytes, "a step message");
        let metrics = u.f64s()?.try_into().map_err(|_| u.malformed())?;
        Ok(StepPart {
            metrics,
            dense: u.f32s()?,
            rows: u.f32s()?,
            ids: u.i32s()?,
        })
    }
}

/// A message of length-prefixed sections (little-endian), written in order.
#[derive(Default)]
pub struct Pack(pub Vec<u8>);

impl Pack {
    pub fn bytes(&mut self, b: &[u8]) {
        self.0.extend((b.len() as u64).to_le_bytes());
        self.0.extend_from_slice(b);
    }
    pub fn f64s(&mut self, v: &[f64]) {
        self.bytes(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    }
    pub fn f32s(&mut self, v: &[f32]) {
        self.bytes(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    }
    pub fn i32s(&mut self, v: &[i32]) {
        self.bytes(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    }
}

/// Reads a [`Pack`] back, section by section; a short or long message is an error.
pub struct Unpack<'a> {
    rest: &'a [u8],
    what: &'static str,
    len: usize,
}

impl<'a> Unpack<'a> {
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Unpack {
            rest: bytes,
            what,
            len: bytes.len(),
        }
    }
    fn malformed(&self) -> Error {
        Error::Other(format!("{} of {} bytes is malformed", self.what, self.len))
    }
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self
            .rest
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(|| self.malformed())?;
        if self.rest.len() < 8 + n {
            return Err(self.malformed());
        }
        let (b, rest) = self.rest[8..].split_at(n);
        self.rest = rest;
        Ok(b)
    }
    fn words<const N: usize>(&mut self) -> Result<impl Iterator<Item = [u8; N]> + 'a> {
        let b = self.bytes()?;
        if b.len() % N != 0 {
            return Err(self.malformed());
        }
        Ok(b.chunks_exact(N).map(|c| c.try_into().expect("N bytes")))
    }
    pub fn f64s(&mut self) -> Result<Vec<f64>> {
        Ok(self.words::<8>()?.map(f64::from_le_bytes).collect())
    }
    pub fn f32s(&mut self) -> Result<Vec<f32>> {
        Ok(self.words::<4>()?.map(f32::from_le_bytes).collect())
    }
    pub fn i32s(&mut self) -> Result<Vec<i32>> {
        Ok(self.words::<4>()?.map(i32::from_le_bytes).collect())
    }
}

/// The files under `dir` (recursively), as (path relative to `dir`, contents).
pub fn pack_dir(dir: &std::path::Path) -> Result<Vec<u8>> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, p: &mut Pack) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if path.is_dir() {
                walk(root, &path, p)?;
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                p.bytes(rel.to_string_lossy().as_bytes());
                p.bytes(&bytes);
            }
        }
        Ok(())
    }
    let mut p = Pack::default();
    walk(dir, dir, &mut p)?;
    Ok(p.0)
}

/// Writes files packed by [`pack_dir`] (or [`Pack`]ed name/contents pairs) under `dir`.
pub fn unpack_dir(bytes: &[u8], dir: &std::path::Path) -> Result<()> {
    let mut u = Unpack::new(bytes, "a file message");
    while !u.is_empty() {
        let name = String::from_utf8_lossy(u.bytes()?).to_string();
        if name.split(['/', '\\']).any(|c| c == ".." || c.is_empty()) {
            return Err(Error::Other(format!(
                "a file message names `{name}`, outside its directory"
            )));
        }
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let contents = u.bytes()?;
        std::fs::write(&path, contents).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

fn f32s<Any: Backend, const D: usize>(t: Tensor<Any, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("converted to f32")
}

/// Appends every dense gradient, in the network's parameter order, to `values`.
struct Flatten {
    grads: GradientsParams,
    values: Vec<f32>,
}

impl WeightVisitor<B> for Flatten {
    fn visit<const D: usize>(&mut self, _: &str, _: Role, _: Layout, p: &mut Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<Inner, D>(p.id) {
            self.values.extend(f32s(g));
        }
    }
}

/// Replaces every dense gradient with the summed values, in the same order.
struct Unflatten<'a> {
    grads: GradientsParams,
    values: &'a [f32],
    at: usize,
}

impl WeightVisitor<B> for Unflatten<'_> {
    fn visit<const D: usize>(&mut self, _: &str, _: Role, _: Layout, p: &mut Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<Inner, D>(p.id) {
            let shape = g.shape();
            let n = shape.num_elements();
            let values = self.values[self.at..self.at + n].to_vec();
            self.at += n;
            let summed = Tensor::<Inner, D>::from_data(TensorData::new(values, shape), &g.device());
            self.grads.register(p.id, summed);
        }
    }
}

/// `"rank R W version"` → `(R, "W version")`.
fn parse_hello(text: &str) -> (Option<usize>, String) {
    let mut words = text.splitn(3, ' ');
    if words.next() != Some("rank") {
        return (None, String::new());
    }
    let rank = words.next().and_then(|r| r.parse().ok());
    (rank, words.next().unwrap_or("").to_string())
}

fn resolve(address: &str) -> Result<SocketAddr> {
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            Error::config(
                "--coordinator",
                format!("`{address}` is not a reachable HOST:PORT (e.g. 127.0.0.1:29500)"),
            )
        })
}

fn write_message(mut stream: &TcpStream, kind: u8, bytes: &[u8]) -> std::io::Result<()> {
    let mut head = [0u8; 9];
    head[0] = kind;
    head[1..].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    stream.write_all(&head)?;
    stream.write_all(bytes)?;
    stream.flush()
}

/// Reads one message from `who`; an abort, a closed connection or a timeout is an
/// error that says which.
fn read_message(mut stream: &TcpStream, who: &str) -> Result<Vec<u8>> {
    let timeout = stream.read_timeout().ok().flatten().unwrap_or_default();
    let fail = |e: std::io::Error| {
        Error::Other(match e.kind() {
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
                format!("{who} stopped (its connection closed)")
            }
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                format!("{who} sent nothing within {} s", timeout.as_secs())
            }
            _ => format!("{who}: {e}"),
        })
    };
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).map_err(fail)?;
    let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes")) as usize;
    let mut bytes = vec![0u8; len];
    stream.read_exact(&mut bytes).map_err(fail)?;
    match head[0] {
        DATA => Ok(bytes),
        ABORT => Err(Error::Other(String::from_utf8_lossy(&bytes).to_string())),
        k => Err(Error::Other(format!(
            "{who} sent a message of unknown kind {k}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", l.local_addr().unwrap().port())
    }

    fn config(rank: usize, world: usize, coordinator: &str) -> GroupConfig {
        GroupConfig {
            rank,
            world,
            coordinator: coordinator.to_string(),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn three_ranks_combine_in_rank_order() {
        let at = free_port();
        let threads: Vec<_> = (1..3)
            .map(|r| {
                let at = at.clone();
                std::thread::spawn(move || {
                    let g = ProcessGroup::join(&config(r, 3, &at), "v").unwrap();
                    g.exchange(vec![r as u8], |_| unreachable!("only rank 0 combines"))
                        .unwrap()
                })
            })
            .collect();
        let g = ProcessGroup::join(&config(0, 3, &at), "v").unwrap();
        let got = g.exchange(vec![0], |parts| Ok(parts.concat())).unwrap();
        assert_eq!(got, vec![0, 1, 2]);
        for t in threads {
            assert_eq!(t.join().unwrap(), vec![0, 1, 2]);
        }
    }

    #[test]
    fn a_rank_that_leaves_stops_the_others_naming_it() {
        let at = free_port();
        let one = {
            let at = at.clone();
            std::thread::spawn(move || drop(ProcessGroup::join(&config(1, 3, &at), "v").unwrap()))
        };
        let two = {
            let at = at.clone();
            std::thread::spawn(move || {
                let g = ProcessGroup::join(&config(2, 3, &at), "v").unwrap();
                g.exchange(vec![2], |_| unreachable!())
                    .err()
                    .unwrap()
                    .to_string()
            })
        };
        let g = ProcessGroup::join(&config(0, 3, &at), "v").unwrap();
        one.join().unwrap();
        let e = g
            .exchange(vec![0], |p| Ok(p.concat()))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("rank 1 stopped"), "{e}");
        let e2 = two.join().unwrap();
        assert!(e2.contains("rank 1 stopped"), "{e2}");
    }

    #[test]
    fn a_missing_rank_a_taken_port_and_another_version_are_errors() {
        let at = free_port();
        let mut short = config(0, 2, &at);
        short.timeout = Duration::from_millis(300);
        let e = ProcessGroup::join(&short, "v").err().unwrap().to_string();
        assert!(e.contains("rank(s) 1 did not connect"), "{e}");

        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = format!("127.0.0.1:{}", taken.local_addr().unwrap().port());
        let e = ProcessGroup::join(&config(0, 2, &at), "v")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("port is taken") && e.contains(&at), "{e}");

        let at = free_port();
        let other = {
            let at = at.clone();
            std::thread::spawn(move || {
                let g = ProcessGroup::join(&config(1, 2, &at), "w").unwrap();
                g.exchange(Vec::new(), |_| unreachable!())
                    .err()
                    .unwrap()
                    .to_string()
            })
        };
        let e = ProcessGroup::join(&config(0, 2, &at), "v")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("refuses rank 1") && e.contains("`2 w`"), "{e}");
        assert!(other.join().unwrap().contains("refuses rank 1"));

        let mut alone = config(1, 2, &free_port());
        alone.timeout = Duration::from_millis(300);
        let e = ProcessGroup::join(&alone, "v").err().unwrap().to_string();
        assert!(e.contains("rank 1 cannot reach the coordinator"), "{e}");
    }
}
