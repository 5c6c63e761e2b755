//! The `tokenizer` interface: the model's tokenizer.json run by the host
//! for skills (texts and pairs, offsets, vocabulary lookups). Encoding
//! tokenizes at most `HOST_MAX_TEXT_BYTES` of a text: a text that
//! truncation cuts is tokenized only as far as its kept tokens need (see
//! `tokenizer::bounded`), a longer text that cannot be so bounded is refused
//! before any tokenization.

use wasmtime::component::Resource;

use super::accel::skill::{tokenizer, types};
use super::convert::*;
use super::HostState;
use crate::tokenizer::{HostTokenizer, TokenizerError, TokenizerOptions};

type WitError = types::Error;
type WResult<T> = wasmtime::Result<Result<T, WitError>>;

impl tokenizer::Host for HostState {}

impl tokenizer::HostTokenizer for HostState {
    fn open(&mut self, options: tokenizer::TokenizerOptions) -> WResult<Resource<HostTokenizer>> {
        let model = match self.ctx.model() {
            Ok(m) => m.clone(),
            Err(e) => return Ok(Err(e)),
        };
        let opts = TokenizerOptions {
            max_length: options.max_length,
            add_special_tokens: options.add_special_tokens,
            pad_to_multiple_of: options.pad_to_multiple_of,
            with_offsets: options.with_offsets,
        };
        match HostTokenizer::open(&model.tokenizer_path(), &opts) {
            Ok(t) => Ok(Ok(self.table.push(t)?)),
            Err(e) => Ok(Err(WitError::Model(e.to_string()))),
        }
    }

    fn encode_batch(
        &mut self,
        t: Resource<HostTokenizer>,
        texts: Vec<String>,
    ) -> WResult<tokenizer::EncodedBatch> {
        let max = self.max_text_bytes;
        let tok = self.table.get(&t)?;
        Ok(batch_out(tok.encode_batch_within(texts, max)))
    }

    fn encode_pairs(
        &mut self,
        t: Resource<HostTokenizer>,
        pairs: Vec<(String, String)>,
    ) -> WResult<tokenizer::EncodedBatch> {
        let max = self.max_text_bytes;
        let tok = self.table.get(&t)?;
        Ok(batch_out(tok.encode_pairs_within(pairs, max)))
    }

    fn decode_tokens(
        &mut self,
        t: Resource<HostTokenizer>,
        tokens: Vec<String>,
    ) -> WResult<String> {
        Ok(self
            .table
            .get(&t)?
            .decode_tokens(tokens)
            .map_err(|e| WitError::InvalidRequest(e.to_string())))
    }

    fn id_to_token(
        &mut self,
        t: Resource<HostTokenizer>,
        id: u32,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&t)?.id_to_token(id))
    }

    fn continuing_subword_prefix(
        &mut self,
        t: Resource<HostTokenizer>,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&t)?.continuing_subword_prefix())
    }

    fn decode(&mut self, t: Resource<HostTokenizer>, ids: Vec<u32>, skip: bool) -> WResult<String> {
        Ok(self
            .table
            .get(&t)?
            .decode(&ids, skip)
            .map_err(|e| WitError::InvalidRequest(e.to_string())))
    }

    fn token_to_id(
        &mut self,
        t: Resource<HostTokenizer>,
        token: String,
    ) -> wasmtime::Result<Option<u32>> {
        Ok(self.table.get(&t)?.token_to_id(&token))
    }

    fn vocab_size(&mut self, t: Resource<HostTokenizer>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&t)?.vocab_size())
    }

    fn drop(&mut self, t: Resource<HostTokenizer>) -> wasmtime::Result<()> {
        self.table.delete(t)?;
        Ok(())
    }
}

/// A tokenized batch in WIT form; a failure is the request's fault.
fn batch_out(
    b: Result<crate::tokenizer::EncodedBatch, crate::tokenizer::TokenizerError>,
) -> Result<tokenizer::EncodedBatch, WitError> {
    b.map(|b| tokenizer::EncodedBatch {
        input_ids: tensor_out(b.input_ids),
        attention_mask: tensor_out(b.attention_mask),
        token_type_ids: tensor_out(b.token_type_ids),
        lengths: b.lengths,
        truncated: b.truncated,
        tokens: b
            .tokens
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|t| tokenizer::TokenInfo {
                        start: t.start,
                        end: t.end,
                        special: t.special,
                        sequence: t.sequence,
                        word: t.word,
                    })
                    .collect()
            })
            .collect(),
    })
    .map_err(|e| match e {
        TokenizerError::TooLong { .. } => WitError::InvalidRequest(format!(
            "{e} (HOST_MAX_TEXT_BYTES; with truncation, a longer text whose kept tokens lie \
             within that many bytes of whitespace-separated text is served)"
        )),
        e => WitError::InvalidRequest(e.to_string()),
    })
}
