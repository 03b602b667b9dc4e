//! `tapgate sim pay-qr`: the simulator's wallet pays the QRIS a gate shows, over the
//! simulator's Linkage API, as a passenger's phone would; a technician's rehearsal of the QR
//! fallback. The wallet itself lives in the simulator crate ([`crate::sim::wallet`]).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::sim::mpm_qr;
use crate::sim::wallet::{Wallet, WalletCredentials};

/// What `tapgate sim` can do besides serving.
#[derive(clap::Subcommand, Debug)]
pub enum SimAction {
    /// Pay a QRIS shown at a gate (its text, e.g. read with a QR decoder) as a linked wallet
    /// over the simulator's Linkage API, then query the payment. Exit 0 when paid.
    PayQr(Box<PayQrArgs>),
}

/// `tapgate sim pay-qr` arguments. Defaults: the demo partner and the demo customer.
#[derive(clap::Args, Debug)]
pub struct PayQrArgs {
    /// The QRIS text (`-` reads stdin).
    pub qr_content: String,
    /// The simulator's base URL (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:8600")]
    pub url: String,
    /// The linked customer's authorization code (default: the simulator's demo customer).
    #[arg(long)]
    pub auth_code: Option<String>,
    /// Client id (X-CLIENT-KEY). Default: the demo's.
    #[arg(long)]
    pub client_id: Option<String>,
    /// The partner's RSA private key (PEM) for the token signatures. Default: the demo key.
    #[arg(long)]
    pub private_key: Option<PathBuf>,
    /// File holding the client secret (HMAC key). Default: the demo's.
    #[arg(long)]
    pub client_secret_file: Option<PathBuf>,
    /// X-PARTNER-ID. Default: the demo's.
    #[arg(long)]
    pub partner_id: Option<String>,
    /// CHANNEL-ID. Default: the demo's.
    #[arg(long)]
    pub channel_id: Option<String>,
    /// Print one JSON object instead of a line.
    #[arg(long)]
    pub json: bool,
}

impl PayQrArgs {
    fn credentials(&self) -> anyhow::Result<WalletCredentials> {
        let mut c = WalletCredentials::demo();
        if let Some(p) = &self.private_key {
            c.private_key_pem =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        }
        if let Some(p) = &self.client_secret_file {
            c.client_secret = crate::daemon::station::read_secret("client secret", p)?;
        }
        let set = |field: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                field.clone_from(v);
            }
        };
        set(&mut c.auth_code, &self.auth_code);
        set(&mut c.client_id, &self.client_id);
        set(&mut c.partner_id, &self.partner_id);
        set(&mut c.channel_id, &self.channel_id);
        Ok(c)
    }
}

/// Runs a `tapgate sim` action.
pub async fn run(action: SimAction) -> anyhow::Result<ExitCode> {
    match action {
        SimAction::PayQr(args) => pay_qr(*args).await,
    }
}

/// `tapgate sim pay-qr`.
pub async fn pay_qr(args: PayQrArgs) -> anyhow::Result<ExitCode> {
    let text = if args.qr_content == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the QR text from stdin")?;
        s
    } else {
        args.qr_content.clone()
    };
    let text = text.trim();
    let qr = mpm_qr::parse(text).context("the QR text")?;
    let wallet = Wallet::new(&args.url, args.credentials()?)?;
    let paid = wallet.pay(text).await?;
    let status = wallet.query(&paid).await?;
    let ok = status.latest_transaction_status == "00";
    if args.json {
        let out = serde_json::json!({
            "merchantName": qr.merchant_name,
            "merchantId": paid.merchant_id,
            "amount": paid.amount,
            "qrReferenceNo": paid.qr_reference_no,
            "partnerReferenceNo": paid.partner_reference_no,
            "referenceNo": paid.reference_no,
            "transactionDate": paid.transaction_date,
            "latestTransactionStatus": status.latest_transaction_status,
            "transactionStatusDesc": status.description,
        });
        println!("{out}");
    } else {
        println!(
            "paid Rp {} to {} (QR {}, payment {}): status {} {}",
            paid.amount,
            qr.merchant_name,
            paid.qr_reference_no,
            paid.reference_no,
            status.latest_transaction_status,
            status.description
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::wallet::Tokens;
    use crate::sim::{SimConfig, SimPaths, Simulator};

    fn args(qr: &str, url: &str) -> PayQrArgs {
        PayQrArgs {
            qr_content: qr.into(),
            url: url.into(),
            auth_code: None,
            client_id: None,
            private_key: None,
            client_secret_file: None,
            partner_id: None,
            channel_id: None,
            json: true,
        }
    }

    #[tokio::test]
    async fn pay_qr_pays_a_generated_qr_once() {
        let sim = Simulator::start(SimConfig::demo(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        // The gate's generate, signed as the gate signs (no customer token).
        let gate = Wallet::new(&sim.base_url(), WalletCredentials::demo()).unwrap();
        let tokens = Tokens {
            b2b: gate.b2b_token().await.unwrap(),
            customer: String::new(),
        };
        let body = serde_json::json!({
            "partnerReferenceNo": "GATE-CLI-1", "merchantId": "MRT-JKT-DEMO",
            "amount": { "value": "14000.00", "currency": "IDR" },
        });
        let call = gate
            .transaction_call(&SimPaths::default().mpm_generate, &tokens, &body)
            .without("Authorization-Customer");
        let answer = gate.send(&call).await.unwrap();
        let qr = answer.body["qrContent"].as_str().unwrap().to_string();

        let code = pay_qr(args(&qr, &sim.base_url())).await.unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        let e = sim.mpm_entry("GATE-CLI-1").unwrap();
        assert_eq!((e.amount, e.payment.is_some()), (14000, true));
        // A second scan of the same QR is refused (already paid).
        let again = pay_qr(args(&qr, &sim.base_url())).await.unwrap_err();
        assert!(format!("{again:#}").contains("4045014"), "{again:#}");
        // Not a QRIS at all: refused before any call.
        assert!(pay_qr(args("hello", &sim.base_url())).await.is_err());
        assert_eq!(sim.stats().mpm.payment_requests, 2);
    }
}
