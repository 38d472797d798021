//! The console's templates: files under `templates/`, built into the binary, rendered by
//! minijinja with HTML escaping on (every `.html` template escapes every value it prints).

use std::sync::OnceLock;

use minijinja::Environment;

use super::ConsoleError;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("error.html", include_str!("templates/error.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("approvals.html", include_str!("templates/approvals.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("dead_letters.html", include_str!("templates/dead_letters.html")),
    ("dead_letter.html", include_str!("templates/dead_letter.html")),
    ("status.html", include_str!("templates/status.html")),
];

/// The environment, built once: the templates are fixed at compile time.
fn environment() -> &'static Result<Environment<'static>, String> {
    static ENVIRONMENT: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut environment = Environment::new();
        for (name, source) in TEMPLATES {
            environment
                .add_template(name, source)
                .map_err(|e| format!("template {name}: {e}"))?;
        }
        Ok(environment)
    })
}

/// Renders template `name` with `context`.
pub fn render(name: &str, context: impl serde::Serialize) -> Result<String, ConsoleError> {
    let failed = |error: String| {
        tracing::error!(template = name, %error, "console: cannot render a page");
        ConsoleError::Unavailable("this page cannot be shown".to_owned())
    };
    let environment = environment().as_ref().map_err(|e| failed(e.clone()))?;
    environment
        .get_template(name)
        .and_then(|template| template.render(minijinja::Value::from(minijinja::value::Serde(&context))))
        .map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_compiles_and_escapes_html() {
        let page = super::render(
            "error.html",
            serde_json::json!({ "title": "Oops", "status": 400, "message": "<script>alert(1)</script>" }),
        )
        .unwrap();
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
    }
}
