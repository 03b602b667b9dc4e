//! What the MPM and Linkage tests share: a simulator on a manual clock, the merchant's
//! (gate's) signed calls, the wallet, and a tiny merchant endpoint that receives
//! notifications.

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tapgate_core::clock::ManualClock;
use tapgate_sim::wallet::{Answer, Tokens, Wallet, WalletCredentials};
use tapgate_sim::{jakarta, SimConfig, SimHandle, SimPaths, Simulator};
use tokio::sync::mpsc;

/// The merchant of `SimConfig::demo`.
pub const MERCHANT: &str = "MRT-JKT-DEMO";

/// A running simulator, its clock, a wallet for the demo customer and the merchant's caller.
pub struct Setup {
    pub sim: SimHandle,
    pub clock: ManualClock,
    pub wallet: Wallet,
    pub merchant: Merchant,
}

/// A simulator (demo partner, `tweak`ed) on a manual clock that starts now.
pub async fn setup_with(tweak: impl FnOnce(&mut SimConfig)) -> Setup {
    setup_at("", tweak).await
}

/// The same with every path under `prefix` (the wallet's base URL ends with it).
pub async fn setup_at(prefix: &str, tweak: impl FnOnce(&mut SimConfig)) -> Setup {
    let clock = ManualClock::new(jiff::Timestamp::now(), jakarta());
    let mut cfg = SimConfig::demo();
    cfg.clock = Arc::new(clock.clone());
    let p = &mut cfg.paths;
    for path in [
        &mut p.token,
        &mut p.payment,
        &mut p.query,
        &mut p.refund,
        &mut p.mpm_generate,
        &mut p.mpm_query,
        &mut p.mpm_refund,
        &mut p.customer_token,
        &mut p.linkage_payment,
        &mut p.linkage_query,
    ] {
        *path = format!("{prefix}{path}");
    }
    tweak(&mut cfg);
    let sim = Simulator::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("{}{prefix}", sim.base_url());
    let wallet = || {
        Wallet::new(&base, WalletCredentials::demo())
            .unwrap()
            .with_clock(Arc::new(clock.clone()))
    };
    let merchant = Merchant::new(wallet()).await;
    Setup {
        wallet: wallet(),
        merchant,
        sim,
        clock,
    }
}

pub async fn setup() -> Setup {
    setup_with(|_| {}).await
}

/// A wallet on the simulator's clock.
pub fn wallet_for(sim: &SimHandle, clock: &ManualClock, creds: WalletCredentials) -> Wallet {
    Wallet::new(&sim.base_url(), creds)
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
}

/// The gate's side: QRIS MPM calls signed like any SNAP transaction, with a B2B token and no
/// customer token.
pub struct Merchant {
    signer: Wallet,
    tokens: Tokens,
}

impl Merchant {
    /// A merchant signing with `signer`'s credentials, base URL and clock.
    pub async fn new(signer: Wallet) -> Merchant {
        let b2b = signer.b2b_token().await.unwrap();
        Merchant {
            signer,
            tokens: Tokens {
                b2b,
                customer: String::new(),
            },
        }
    }

    pub async fn call(&self, path: &str, body: Value) -> Answer {
        let call = self
            .signer
            .transaction_call(path, &self.tokens, &body)
            .without("Authorization-Customer");
        self.signer.send(&call).await.unwrap()
    }

    /// `qr-mpm-generate` for `amount` rupiah; extra fields merged into the body.
    pub async fn generate(&self, partner_ref: &str, amount: u64, extra: Value) -> Answer {
        let mut body = json!({
            "partnerReferenceNo": partner_ref,
            "amount": { "value": format!("{amount}.00"), "currency": "IDR" },
            "merchantId": MERCHANT,
            "terminalId": "LBB-G1",
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.call(&SimPaths::default().mpm_generate, body).await
    }

    /// `qr-mpm-generate` that must succeed: its `qrContent`.
    pub async fn qr(&self, partner_ref: &str, amount: u64, extra: Value) -> String {
        let a = self.generate(partner_ref, amount, extra).await;
        assert_eq!(a.code(), "2004700", "{:?}", a.body);
        a.body["qrContent"].as_str().unwrap().to_string()
    }

    /// The merchant's `qr-mpm-query`.
    pub async fn query(&self, partner_ref: &str) -> Answer {
        let body = json!({ "originalPartnerReferenceNo": partner_ref, "merchantId": MERCHANT });
        self.call(&SimPaths::default().mpm_query, body).await
    }

    /// `latestTransactionStatus` of the QR.
    pub async fn status(&self, partner_ref: &str) -> String {
        let a = self.query(partner_ref).await;
        assert_eq!(a.code(), "2005100", "{:?}", a.body);
        a.body["latestTransactionStatus"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `qr-mpm-refund` of `amount` under the refund reference `refund_ref`.
    pub async fn refund(&self, refund_ref: &str, original_ref: &str, amount: u64) -> Answer {
        let body = json!({
            "partnerReferenceNo": refund_ref,
            "originalPartnerReferenceNo": original_ref,
            "merchantId": MERCHANT,
            "amount": { "value": format!("{amount}.00"), "currency": "IDR" },
            "reason": "paid after the QR expired",
        });
        self.call(&SimPaths::default().mpm_refund, body).await
    }
}

/// One notification as the merchant received it.
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A merchant endpoint at `url` that answers every notification `2005200`.
pub struct Receiver {
    pub url: String,
    rx: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new().route(
            "/merchant/qr-mpm-notify",
            post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Received { headers, body });
                    Json(json!({ "responseCode": "2005200", "responseMessage": "Successful" }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/merchant/qr-mpm-notify"),
            rx,
        }
    }

    /// The next notification, if one arrives within `ms`.
    pub async fn next(&mut self, ms: u64) -> Option<Received> {
        tokio::time::timeout(std::time::Duration::from_millis(ms), self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

/// The answer's `responseCode` and HTTP status, for compact assertions.
pub fn outcome(a: &Answer) -> (u16, String) {
    (a.status, a.code().to_string())
}
