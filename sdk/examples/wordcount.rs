//! The plugin of the README's "Writing a plugin in five minutes", kept
//! here so it is compiled with the SDK.

use corral_sdk::{Context, Error, Plugin};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Text {
    text: String,
}

#[derive(Serialize)]
struct Count {
    words: usize,
}

fn main() {
    Plugin::new("wordcount", env!("CARGO_PKG_VERSION"))
        .json(
            "count",
            |ctx: &mut Context<'_>, input: Text| -> Result<Count, Error> {
                ctx.info("counting");
                if ctx.is_cancelled() {
                    return Err(Error::new("cancelled", "the caller gave up"));
                }
                Ok(Count {
                    words: input.text.split_whitespace().count(),
                })
            },
        )
        .serve()
}
