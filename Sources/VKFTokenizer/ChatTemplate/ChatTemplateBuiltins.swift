/// Named templates for base models that ship none (`--chat-template chatml`).
extension ChatTemplate {
  /// The names `builtin(_:)` accepts.
  public static let builtinNames = ["chatml", "llama3", "llama2", "mistral", "alpaca", "zephyr"]

  /// A built-in template by name; throws `ChatTemplateError.notFound` listing the names.
  public static func builtin(_ name: String) throws -> ChatTemplate {
    guard let source = builtinSources[name.lowercased()] else {
      throw ChatTemplateError.notFound("unknown built-in chat template \"\(name)\"")
    }
    return try ChatTemplate(source: source)
  }

  /// Template text per name. chatml, llama2 and zephyr are the templates their reference
  /// models ship (OpenHermes/SmolLM2, Llama-2-chat, zephyr-7b-beta); llama3 is
  /// Meta-Llama-3-8B-Instruct's; mistral is v0.1's with the system prompt folded into the
  /// first user turn instead of rejected; alpaca is the Stanford Alpaca prompt layout.
  static let builtinSources: [String: String] = [
    "chatml": """
      {% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}\
      {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}
      """,
    "llama3": """
      {% set loop_messages = messages %}{% for message in loop_messages %}\
      {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}\
      {% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}\
      {% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}
      """,
    "llama2": """
      {% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}\
      {% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}\
      {% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\
      {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}\
      {% if loop.index0 == 0 and system_message != false %}\
      {% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}\
      {% else %}{% set content = message['content'] %}{% endif %}\
      {% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}\
      {% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}
      """,
    "mistral": """
      {% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}\
      {% else %}{% set loop_messages = messages %}{% set system_message = '' %}{% endif %}\
      {{ bos_token }}{% for message in loop_messages %}\
      {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\
      {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}\
      {% if message['role'] == 'user' %}{% if loop.first and system_message %}\
      {{ '[INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\
      {% else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}\
      {% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}
      """,
    "alpaca": """
      {% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}\
      {% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}\
      {% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}\
      {% endif %}{% endfor %}{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}
      """,
    "zephyr": """
      {% for message in messages %}
      {% if message['role'] == 'user' %}
      {{ '<|user|>\\n' + message['content'] + eos_token }}
      {% elif message['role'] == 'system' %}
      {{ '<|system|>\\n' + message['content'] + eos_token }}
      {% elif message['role'] == 'assistant' %}
      {{ '<|assistant|>\\n'  + message['content'] + eos_token }}
      {% endif %}
      {% if loop.last and add_generation_prompt %}
      {{ '<|assistant|>' }}
      {% endif %}
      {% endfor %}
      """,
  ]
}
