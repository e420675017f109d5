//! A browser for black-box tests of the website: keeps cookies, never
//! follows redirects (so every 303 can be asserted), and fills forms with
//! their CSRF and one-time tokens.

#![allow(dead_code)]

use super::Gateway;
use reqwest::header::HeaderMap;
use std::time::Duration;

/// A browser: keeps cookies, never follows redirects.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
}

pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The value of the first hidden or text input named `name`.
    pub fn field(&self, name: &str) -> String {
        let at = self.body.find(&format!("name=\"{name}\"")).unwrap_or_else(|| panic!("no field {name}"));
        let rest = &self.body[at..];
        let v = rest.find("value=\"").expect("value") + 7;
        rest[v..v + rest[v..].find('"').expect("end")].to_string()
    }

    /// The text of the element with `id` (first text node).
    pub fn text_of(&self, id: &str) -> String {
        let at = self.body.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id}"));
        let rest = &self.body[at..];
        let start = rest.find('>').unwrap() + 1;
        rest[start..start + rest[start..].find('<').unwrap()].trim().to_string()
    }
}

impl Browser {
    pub fn new(gw: &Gateway) -> Browser {
        Browser::at(gw.url(""))
    }

    /// A browser for the operator console on the admin listener.
    pub fn operator(gw: &Gateway) -> Browser {
        Browser::at(format!("http://{}", gw.admin.expect("admin listener")))
    }

    fn at(base: String) -> Browser {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Browser { http, base }
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Page {
        let r = rb.send().await.expect("request");
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        Page { status, headers, body: r.text().await.unwrap_or_default() }
    }

    pub async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(self.http.post(format!("{}{path}", self.base)).form(form)).await
    }

    /// Fetches the form at `form_path`, then posts `fields` with its CSRF token.
    pub async fn submit(&self, form_path: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(form_path).await;
        assert_eq!(page.status, 200, "{form_path}: {}", page.body);
        let csrf = page.field("csrf");
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(action, &all).await
    }

    pub async fn sign_up(&self, email: &str, password: &str, code: Option<&str>) -> Page {
        let mut f = vec![("email", email), ("password", password), ("password2", password)];
        if let Some(c) = code {
            f.push(("code", c));
        }
        self.submit("/console/sign-up", "/console/sign-up", &f).await
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> Page {
        self.submit("/console/sign-in", "/console/sign-in", &[("email", email), ("password", password)]).await
    }

    /// Creates a key on the API Keys page; returns the page and the plaintext.
    pub async fn create_key(&self, fields: &[(&str, &str)]) -> (Page, Option<String>) {
        let form = self.get("/console/keys").await;
        let (csrf, once) = (form.field("csrf"), form.field("once"));
        let mut all = vec![("csrf", csrf.as_str()), ("once", once.as_str())];
        all.extend_from_slice(fields);
        let page = self.post("/console/keys", &all).await;
        let key = page.body.contains("id=\"new-key-value\"").then(|| page.text_of("new-key-value"));
        (page, key)
    }
}

/// A browser signed in as a new user.
pub async fn signed_up(gw: &Gateway, email: &str) -> Browser {
    let b = Browser::new(gw);
    let p = b.sign_up(email, "correct horse", None).await;
    assert_eq!(p.status, 303, "{}", p.body);
    b
}

/// Creates redemption codes with the CLI; returns them.
pub fn codes(gw: &Gateway, args: &[&str]) -> Vec<String> {
    let mut all = vec!["codes", "create"];
    all.extend_from_slice(args);
    let out = gw.cli(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().filter(|l| l.starts_with("CPX-")).map(str::to_string).collect()
}

/// An operator console browser signed in with the admin token.
pub async fn operator_signed_in(gw: &Gateway) -> Browser {
    let b = Browser::operator(gw);
    let p = b.submit("/sign-in", "/sign-in", &[("token", &gw.admin_token())]).await;
    assert_eq!((p.status, p.location()), (303, "/"), "{}", p.body);
    b
}
