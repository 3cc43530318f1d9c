package report

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"

	"github.com/hopcheck/hopcheck/diagnose"
)

// WriteJSON writes r as indented JSON (docs/schema-run.md) with a
// trailing newline. Every nil list or map in the report, at any depth, is
// written as [] or {} rather than null; the caller's report is not
// modified.
func WriteJSON(w io.Writer, r diagnose.Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(withEmptyLists(reflect.ValueOf(r)).Interface()); err != nil {
		return fmt.Errorf("write JSON report: %w", err)
	}
	return nil
}

// withEmptyLists returns a deep copy of v whose nil slices and maps are
// empty. It walks exported struct fields, slices, arrays, maps and
// pointers, so fields added to the report later are covered too; values
// with unexported state (time.Time) are copied as they are.
func withEmptyLists(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return v // bytes (json.RawMessage): nil has its own meaning
		}
		if v.IsNil() {
			return reflect.MakeSlice(v.Type(), 0, 0)
		}
		out := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			out.Index(i).Set(withEmptyLists(v.Index(i)))
		}
		return out
	case reflect.Map:
		out := reflect.MakeMapWithSize(v.Type(), v.Len())
		iter := v.MapRange()
		for iter.Next() {
			out.SetMapIndex(iter.Key(), withEmptyLists(iter.Value()))
		}
		return out
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		out := reflect.New(v.Type().Elem())
		out.Elem().Set(withEmptyLists(v.Elem()))
		return out
	case reflect.Array:
		out := reflect.New(v.Type()).Elem()
		for i := range v.Len() {
			out.Index(i).Set(withEmptyLists(v.Index(i)))
		}
		return out
	case reflect.Struct:
		out := reflect.New(v.Type()).Elem()
		out.Set(v)
		for i := range v.NumField() {
			if f := out.Field(i); f.CanSet() {
				f.Set(withEmptyLists(v.Field(i)))
			}
		}
		return out
	}
	return v
}
