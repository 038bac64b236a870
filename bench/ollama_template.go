// Renders Ollama chat templates as Ollama does for a chat request: Go's text/template over .Messages (role, content,
// tool calls with name and arguments) with Ollama's `json` function (encoding/json: compact, map keys sorted). For
// bench/export_gguf.py --go, which checks the TEMPLATE of an exported Modelfile against the run's chat format.
// Reads {"template": "...", "conversations": [[message, ...], ...]} on stdin; writes a JSON list of rendered texts.
package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Function struct {
	Name      string         `json:"name"`
	Arguments map[string]any `json:"arguments"`
}

type ToolCall struct {
	Function Function `json:"function"`
}

type Message struct {
	Role      string     `json:"role"`
	Content   string     `json:"content"`
	ToolCalls []ToolCall `json:"tool_calls"`
}

type Input struct {
	Template      string      `json:"template"`
	Conversations [][]Message `json:"conversations"`
}

func main() {
	var in Input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	tmpl := template.Must(template.New("TEMPLATE").Funcs(funcs).Parse(in.Template))
	out := []string{}
	for _, messages := range in.Conversations {
		var text strings.Builder
		if err := tmpl.Execute(&text, map[string]any{"Messages": messages}); err != nil {
			panic(err)
		}
		out = append(out, text.String())
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		panic(err)
	}
}
